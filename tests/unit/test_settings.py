import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import SettingsError
from accel.settings import MAX_SOCKHASH, MIN_SOCKHASH, Settings


def test_defaults_are_valid():
    s = Settings()
    assert s.pin_dir == "/sys/fs/bpf/accel"
    assert s.lock_path == "/run/accel/run.lock"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"pin_dir": "relative/dir"}, "absolute"),
        ({"pin_dir": ""}, "absolute"),
        ({"pin_dir": '/sys/fs/bpf/a"b'}, "character"),
        ({"state_dir": "run"}, "absolute"),
        ({"sockhash_size": 0}, "between"),
        ({"sockhash_size": -5}, "between"),
        ({"sockhash_size": 1 << 40}, "between"),
        ({"sockhash_size": "big"}, "integer"),
        ({"sockhash_size": True}, "integer"),
        ({"endpoints_size": 0}, "between"),
        ({"rescan_interval": 0}, "between"),
        ({"flow_growth_cap": 0.5}, "between"),
        ({"flow_growth_cap": 100}, "between"),
        ({"small_write_local": 0}, "between"),
        ({"small_write_local": (1 << 20) + 1}, "between"),
        ({"small_write_remote": -1}, "between"),
        ({"small_write_remote": True}, "between"),
        ({"small_write_local": "4k"}, "between"),
        ({"log_format": "xml"}, "console"),
        ({"cgroup": ""}, "path"),
    ],
)
def test_bad_settings_are_refused_with_the_option_named(kwargs, fragment):
    with pytest.raises(SettingsError) as err:
        Settings(**kwargs)
    assert fragment in str(err.value)
    # The message names the option the user typed.
    name = next(iter(kwargs)).replace("_", "-")
    assert name.split("-")[0] in str(err.value)


@given(st.integers())
def test_sockhash_size_accepted_iff_in_bounds(n):
    try:
        Settings(sockhash_size=n)
        ok = True
    except SettingsError:
        ok = False
    assert ok == (MIN_SOCKHASH <= n <= MAX_SOCKHASH)


@given(st.text(max_size=40))
def test_any_pin_dir_text_is_accepted_or_refused_cleanly(text):
    try:
        s = Settings(pin_dir=text)
    except SettingsError:
        return
    assert s.pin_dir.startswith("/")


def test_small_write_defaults_are_the_builds():
    """bpf/tunables.h keeps its own default for a build without the
    controller; the controller's must be the same number."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "bpf", "tunables.h")) as f:
        text = f.read()
    built = {name: int(value) for name, value in re.findall(r"#define (ACCEL_SMALL_(?:LOCAL|REMOTE)) (\d+)", text)}
    assert built == {"ACCEL_SMALL_LOCAL": Settings().small_write_local, "ACCEL_SMALL_REMOTE": Settings().small_write_remote}

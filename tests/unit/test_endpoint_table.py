from hypothesis import given
from hypothesis import strategies as st

from accel.abi import POLICY_ACCELERATE, POLICY_AMBIGUOUS
from accel.endpoints.table import desired_policies, diff, usable

NS_A, NS_B = (1, 10), (1, 11)


def test_loopback_and_link_local_are_not_endpoints():
    for addr in ("127.0.0.1", "127.5.5.5", "::1", "fe80::1", "169.254.1.1", "::ffff:127.0.0.1", "0.0.0.0"):
        assert not usable(addr), addr
    for addr in ("10.0.0.1", "192.168.1.1", "fd00::1", "2001:db8::1"):
        assert usable(addr), addr


def test_an_address_in_one_namespace_is_accelerated():
    got = desired_policies({NS_A: ["10.0.0.1", "127.0.0.1", "fe80::1"], NS_B: ["10.0.0.2"]})
    assert got == {"10.0.0.1": POLICY_ACCELERATE, "10.0.0.2": POLICY_ACCELERATE}


def test_an_address_in_two_namespaces_is_ambiguous():
    got = desired_policies({NS_A: ["10.0.0.1"], NS_B: ["10.0.0.1", "10.0.0.2"]})
    assert got["10.0.0.1"] == POLICY_AMBIGUOUS
    assert got["10.0.0.2"] == POLICY_ACCELERATE


def test_v4_mapped_spelling_is_the_same_endpoint():
    got = desired_policies({NS_A: ["::ffff:10.0.0.1"], NS_B: ["10.0.0.1"]})
    assert got == {"10.0.0.1": POLICY_AMBIGUOUS}


def test_diff_writes_changes_and_deletes_leftovers():
    upserts, deletes = diff({"a": 1, "b": 1, "c": 3}, {"a": 1, "b": 3, "d": 1})
    assert upserts == {"b": 3, "d": 1}
    assert deletes == ["c"]


@given(
    st.dictionaries(st.text(max_size=3), st.sampled_from([1, 2, 3]), max_size=8),
    st.dictionaries(st.text(max_size=3), st.sampled_from([1, 2, 3]), max_size=8),
)
def test_diff_applied_gives_desired(current, desired):
    upserts, deletes = diff(current, desired)
    result = dict(current)
    result.update(upserts)
    for k in deletes:
        del result[k]
    assert result == desired


def test_a_pod_ip_reassigned_to_another_pod_takes_the_new_pods_policy():
    """Pod A (opted out) is deleted and its IP goes to pod B: B's policy
    applies. While both claim it (a late DELETE), the safer opt-out holds."""
    from accel.abi import POLICY_ACCELERATE, POLICY_OPT_OUT
    from accel.endpoints.kube import OPT_OUT_KEY, KubeState
    from tests.kube_fake import pod

    state = KubeState()
    a = pod("a", ips=("10.9.0.5",), annotations={OPT_OUT_KEY: "false"})
    b = pod("b", ips=("10.9.0.5",))
    state.pod_event("ADDED", a)
    assert state.policies() == {"10.9.0.5": POLICY_OPT_OUT}
    state.pod_event("ADDED", b)  # B is Running before A's deletion arrives
    assert state.policies() == {"10.9.0.5": POLICY_OPT_OUT}
    state.pod_event("DELETED", a)
    assert state.policies() == {"10.9.0.5": POLICY_ACCELERATE}
    state.pod_event("DELETED", b)
    assert state.policies() == {}

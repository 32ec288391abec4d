# The accel agent image. Not built in this project's CI (no container engine
# on our machines); kept minimal and conventional.
FROM debian:bookworm-slim

# bcc for Python comes from Debian (PyPI's `bcc` is another project).
# Kernel headers are NOT in the image: the DaemonSet mounts the node's
# /lib/modules and /usr/src, and accel finds them there.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-bpfcc python3-venv libbpf1 iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/accel
COPY pyproject.toml README.md ./
COPY accel ./accel
COPY bpf ./bpf
RUN python3 -m venv --system-site-packages /opt/accel/.venv \
 && /opt/accel/.venv/bin/pip install --no-cache-dir .
ENV ACCEL_BPF_DIR=/opt/accel/bpf

ENTRYPOINT ["/opt/accel/.venv/bin/accel"]
CMD ["run", "--kubernetes"]

# SAGE queue layer in a container, one image per install profile.
#
#   docker build --build-arg PROFILE=full -t sage:full .                  # runtime: `sage info`
#   docker build --build-arg PROFILE=full --target test -t sage:full-test .
#   docker run --rm --shm-size=512m sage:full-test                        # the profile's suite
#
# PROFILE=minimal (default): the package + Ray, default backend ray_queue.
# PROFILE=full: minimal + the native sage_queue, compiled in the build stage only; the
# runtime image gets the built wheel and no compiler.
# BASE_IMAGE: any Debian-based image with python3 (3.10+) and its venv module; where no
# registry can be reached, ci/base_image.sh builds an equivalent.
# Works with the legacy builder (no BuildKit features).

ARG BASE_IMAGE=python:3.11-slim-bookworm

# -- build: the wheel for the profile, installed with Ray into /opt/venv ------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
# Ray first (~260 MB, the slow download), in a layer that neither the profile nor the
# sources invalidate. The requirement is read from pyproject.toml's `ray` extra; the
# wheel install below checks it again, so this layer only saves time.
COPY pyproject.toml /src/pyproject.toml
RUN ray_req=$(sed -n 's/^ray = \["\([^"]*\)"\]$/\1/p' /src/pyproject.toml) \
 && /opt/venv/bin/pip install "${ray_req:-ray}"

ARG PROFILE=minimal
# full: a C++ compiler, make and CMake, plus the Python headers where the base lacks them
# (Debian's own python3 keeps them in python3-dev; official images ship them).
RUN case "$PROFILE" in \
        minimal|full) ;; \
        *) echo "PROFILE must be minimal or full, not '$PROFILE'" >&2; exit 2 ;; \
    esac \
 && if [ "$PROFILE" = full ]; then \
        include=$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))') \
        && apt-get update \
        && apt-get install -y --no-install-recommends g++ make cmake \
            $([ -f "$include/Python.h" ] || echo python3-dev) \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY setup.py README.md /src/
COPY sage /src/sage
COPY sage_ext /src/sage_ext
# SAGE_BUILD_NATIVE=1 makes setup.py build the extension with CMake; a failed build fails here.
RUN SAGE_BUILD_NATIVE=$([ "$PROFILE" = full ] && echo 1 || echo 0) \
        /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src \
 && /opt/venv/bin/pip install "$(ls /wheels/sage_queue-*.whl)[ray]" \
 && printf '{"profile": "%s", "queue_backend": "%s"}\n' "$PROFILE" \
        "$([ "$PROFILE" = full ] && echo sage || echo ray)" >/opt/venv/sage-profile.json

# -- slim: what both final images share: the venv, a non-root user, no compiler ----------------
FROM ${BASE_IMAGE} AS slim
ARG PROFILE=minimal
RUN useradd --create-home --uid 1000 --shell /bin/sh sage
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH SAGE_PROFILE=${PROFILE} PYTHONDONTWRITEBYTECODE=1
USER sage
WORKDIR /home/sage

# -- test: plus the test tools and the suite; the container's exit status is the suite's ---------
FROM slim AS test
USER root
COPY --from=build /wheels /wheels
RUN PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        /opt/venv/bin/pip install "$(ls /wheels/sage_queue-*.whl)[test]" \
 && rm -rf /wheels
COPY --chown=sage:sage pyproject.toml /home/sage/suite/pyproject.toml
COPY --chown=sage:sage tests /home/sage/suite/tests
USER sage
WORKDIR /home/sage/suite
# Ray stays on loopback; a missing Ray (both profiles) or native module (full) fails instead
# of skipping; -rs lists every skip with its reason; timeout_method=thread makes a test stuck
# in native code fail at the timeout instead of hanging. tests/test_install.py is left out: it
# runs install.py on a source checkout (venvs, pip, CMake), which this image has not got;
# .ci/run runs it.
ENV RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 SAGE_REQUIRE_RAY=1
CMD ["sh", "-c", "if [ \"$SAGE_PROFILE\" = full ]; then export SAGE_REQUIRE_NATIVE=1; fi; exec pytest -n auto -p no:cacheprovider -rs -o timeout_method=thread --ignore=tests/test_install.py tests"]

# -- runtime (the default target, so last): `sage info` -------------------------------------------
FROM slim AS runtime
ARG PROFILE=minimal
LABEL org.opencontainers.image.title="SAGE queue layer (${PROFILE} profile)"
# sage_queue keeps its rings in /dev/shm: Docker gives 64 MB unless `--shm-size` says more.
CMD ["sage", "info"]

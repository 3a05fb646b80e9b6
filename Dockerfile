# The tft-monitor image: tft-exporter, tft-forecaster and tft-trainer.
#   docker build -t tft-monitor:0.1.0 .      (docker-compose.yml builds it for you)

# promtool, for `tft-exporter backfill` (it converts the history into TSDB blocks). Same
# version as the prometheus service of docker-compose.yml.
FROM prom/prometheus:v2.53.0 AS prometheus

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1

# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY --from=prometheus /bin/promtool /usr/local/bin/promtool

WORKDIR /opt/tft-monitor
COPY . .
# Editable, so that paths relative to the checkout (the shipped model in models/, config/)
# resolve inside the image as they do in a source checkout.
# /models is the registry the containers use (config/compose.yml). It starts as a copy of the
# model shipped in the repository (models/, when there is one): Docker seeds an empty named
# volume mounted there from the image, so a fresh stack serves a trained model at once.
# The checkout stays root-owned and read-only to the runtime user; what the commands write
# relative to their working directory (the trainer's runs/train: best-epoch checkpoint, Lightning's
# CSV logs; trainer.work_dir moves it) and library caches under HOME go to /var/lib/tft-monitor,
# which tft owns.
RUN pip install -e . \
 && useradd --system --user-group --uid 10001 --home-dir /var/lib/tft-monitor --shell /usr/sbin/nologin tft \
 && mkdir -p /models /var/lib/tft-monitor \
 && if [ -d models ]; then cp -a models/. /models/; fi \
 && chown -R tft /models \
 && chown tft:tft /var/lib/tft-monitor

ENV HOME=/var/lib/tft-monitor
WORKDIR /var/lib/tft-monitor
USER tft
EXPOSE 8920 8921
CMD ["tft-forecaster", "--help"]

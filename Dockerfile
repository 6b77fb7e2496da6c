# posthorn: one mail daemon (posthornd) and its management CLI (setup).
# Build: docker build -t posthorn .   (classic builder; no BuildKit syntax)

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
        libev-dev libssl-dev libsqlite3-dev libcrypt-dev libunbound-dev libevent-dev \
        libclamav-dev libspf2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY core core
COPY filters filters
COPY cmd cmd
RUN make -j"$(nproc)" all && strip build/posthornd build/setup

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libev4 libssl3 libsqlite3-0 libcrypt1 libunbound8 libevent-2.1-7 libclamav12 libspf2-2 \
        ca-certificates tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
        /usr/share/doc/* /usr/share/man/*
COPY --from=build /src/build/posthornd /src/build/setup /usr/local/bin/
COPY docker/entrypoint /usr/local/bin/docker-entrypoint
COPY docker/common.sh docker/tls.sh /usr/local/lib/posthorn/
RUN chmod 0755 /usr/local/bin/docker-entrypoint

EXPOSE 25 143 465 587 993 110 995
VOLUME ["/var/mail", "/var/mail-state", "/var/log/mail"]

# Healthy when every enabled listener greets (after TLS on 465 and 995).
# A short interval so that `healthy` shows within seconds of the start.
HEALTHCHECK --interval=10s --timeout=20s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/setup", "debug", "health"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/docker-entrypoint"]

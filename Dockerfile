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
# clamav-freshclam fetches the ClamAV signatures at run time (none are baked
# in): the entrypoint starts it when ENABLE_CLAMAV=1 with its own
# /etc/posthorn/freshclam.conf. policy-rc.d keeps the package scripts from
# starting services (freshclam, cron); the package's service files and
# configuration go, and /etc/clamav/freshclam.conf points at the
# entrypoint's, so that `freshclam` run by hand updates the same directory.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d \
 && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libev4 libssl3 libsqlite3-0 libcrypt1 libunbound8 libevent-2.1-7 libclamav12 libspf2-2 \
        clamav-freshclam ca-certificates tini \
 && apt-get clean \
 && rm -f /usr/sbin/policy-rc.d \
 && rm -rf /etc/clamav /etc/init.d/clamav-freshclam /etc/logrotate.d/clamav-freshclam \
        /lib/systemd/system/clamav-freshclam* /etc/apparmor.d/usr.bin.freshclam \
        /etc/logcheck/ignore.d.server/clamav-freshclam \
        /etc/network/if-up.d/clamav-freshclam-ifupdown /etc/network/if-down.d/clamav-freshclam-ifupdown \
        /etc/ppp/ip-up.d/clamav-freshclam-ifupdown /etc/ppp/ip-down.d/clamav-freshclam-ifupdown \
        /var/lib/clamav /var/log/clamav \
 && mkdir /etc/clamav \
 && ln -s /etc/posthorn/freshclam.conf /etc/clamav/freshclam.conf \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
        /var/cache/debconf/*-old /usr/share/doc/* /usr/share/man/*
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

# Shared by the entrypoint's steps (sourced; POSIX sh).

info() { printf 'posthorn-entrypoint: %s\n' "$*" >&2; }
fatal() { printf 'posthorn-entrypoint: %s\n' "$*" >&2; exit 1; }

# docker-mailserver's PERMIT_DOCKER becomes PERMIT_NETWORKS (appended to
# the user's own): networks whose clients may send through port 25 without
# authentication. The image has no iproute2, so the routes come from
# /proc/net/route (IPv4, hexadecimal in the host's little-endian order).
PROC_NET_ROUTE=${PROC_NET_ROUTE:-/proc/net/route}

# Prints "iface destination gateway prefix" per IPv4 route, dotted quads.
ipv4_routes() {
    awk 'function hx(s,  i, v) {
             v = 0
             for (i = 1; i <= length(s); i++)
                 v = v * 16 + index("0123456789ABCDEF", toupper(substr(s, i, 1))) - 1
             return v
         }
         function ip(h) {
             return hx(substr(h, 7, 2)) "." hx(substr(h, 5, 2)) "." hx(substr(h, 3, 2)) "." hx(substr(h, 1, 2))
         }
         function bits(h,  i, n, v) {
             n = 0
             for (i = 1; i <= 8; i += 2) {
                 v = hx(substr(h, i, 2))
                 while (v > 0) { n += v % 2; v = int(v / 2) }
             }
             return n
         }
         NR > 1 && NF >= 8 { print $1, ip($2), ip($3), bits($8) }' "$PROC_NET_ROUTE" 2>/dev/null
}

# The container's IPv4 networks: routes on an interface without a gateway.
connected_networks() {
    ipv4_routes | awk '$1 != "lo" && $3 == "0.0.0.0" && $2 != "0.0.0.0" { print $2 "/" $4 }'
}

# The docker host network: the default gateway's /16 (as docker-mailserver).
host_network() {
    ipv4_routes | awk '$2 == "0.0.0.0" && $4 == 0 && $3 != "0.0.0.0" {
        split($3, o, "."); print o[1] "." o[2] ".0.0/16"; exit }'
}

# The container's own addresses, one host each: `hostname -i` (docker's
# /etc/hosts entry), else the kernel's local IPv4 addresses.
container_addresses() {
    addrs=$(hostname -i 2>/dev/null || true)
    for a in $addrs; do
        case "$a" in
            127.*|::1|fe80:*|*%*) ;;
            *:*) echo "$a/128" ;;
            *.*) echo "$a/32" ;;
        esac
    done | grep . || local_ipv4_addresses
}

local_ipv4_addresses() {
    awk '$1 == "|--" { a = $2 } $1 == "/32" && $3 == "LOCAL" && a !~ /^127\./ { print a "/32" }' \
        "${PROC_NET_FIB_TRIE:-/proc/net/fib_trie}" 2>/dev/null || true
}

check_permit_docker() {
    case "${PERMIT_DOCKER:-none}" in
        none|'') return 0 ;;
        container) nets=$(container_addresses) ;;
        host) nets=$(host_network) ;;
        network|connected-networks) nets=$(connected_networks) ;;
        *) fatal "PERMIT_DOCKER: invalid value '$PERMIT_DOCKER'; accepted: none, container, host, network, connected-networks" ;;
    esac
    nets=$(printf '%s\n' "$nets" | awk 'NF && !seen[$0]++' | paste -sd, -)
    if [ -z "$nets" ]; then
        info "PERMIT_DOCKER=$PERMIT_DOCKER: no network found; no network may relay without authentication (as none)"
        return 0
    fi
    info "PERMIT_DOCKER=$PERMIT_DOCKER: PERMIT_NETWORKS=$nets"
    if [ -n "${PERMIT_NETWORKS:-}" ]; then
        PERMIT_NETWORKS="$PERMIT_NETWORKS,$nets"
    else
        PERMIT_NETWORKS=$nets
    fi
    export PERMIT_NETWORKS
}

# ClamAV (ENABLE_CLAMAV=1): posthornd scans with libclamav and loads the
# signatures from CLAMAV_DB_DIR; freshclam fetches them. None are in the
# image, so they live in the state volume, where docker-mailserver keeps
# them (STATE_DIR/lib-clamav): a recreated container keeps its signatures.
CLAMAV_DEFAULT_SUBDIR=lib-clamav
FRESHCLAM_CONF=/etc/posthorn/freshclam.conf
# 12 checks a day, as docker-mailserver's freshclam.
FRESHCLAM_CHECKS=12

# After load_effective_settings: an unset CLAMAV_DB_DIR becomes
# STATE_DIR/lib-clamav (exported, so the effective settings carry it).
check_clamav() {
    if [ -z "${CLAMAV_DB_DIR:-}" ] && [ -z "${CLAMAV_DB_DIR__FILE:-}" ]; then
        CLAMAV_DB_DIR="$S_STATE_DIR/$CLAMAV_DEFAULT_SUBDIR"
        export CLAMAV_DB_DIR
        S_CLAMAV_DB_DIR=$CLAMAV_DB_DIR
    fi
    [ "$S_ENABLE_CLAMAV" = 1 ] || return 0
    prepare_dir CLAMAV_DB_DIR "$S_CLAMAV_DB_DIR"
}

# freshclam's DatabaseOwner must be a user name: the mail user's, or a
# "posthorn" account made for DMS_VMAIL_UID/GID. Prints the name; fails
# (after a log line) when no account can be made.
mail_user_name() {
    if ! getent group "$S_DMS_VMAIL_GID" >/dev/null; then
        groupadd -g "$S_DMS_VMAIL_GID" posthorn 2>/dev/null || {
            info "cannot create a group for DMS_VMAIL_GID $S_DMS_VMAIL_GID"
            return 1
        }
    fi
    if ! getent passwd "$S_DMS_VMAIL_UID" >/dev/null; then
        useradd -u "$S_DMS_VMAIL_UID" -g "$S_DMS_VMAIL_GID" -M -N -d /nonexistent \
            -s /usr/sbin/nologin -c "posthorn mail user" posthorn 2>/dev/null || {
            info "cannot create a user for DMS_VMAIL_UID $S_DMS_VMAIL_UID"
            return 1
        }
    fi
    getent passwd "$S_DMS_VMAIL_UID" | cut -d: -f1
}

write_freshclam_conf() {
    owner=$1
    tmp="$FRESHCLAM_CONF.tmp"
    mkdir -p "$(dirname "$FRESHCLAM_CONF")"
    {
        echo "# Written by the entrypoint at every start (ENABLE_CLAMAV=1): changes are lost."
        echo "DatabaseDirectory $S_CLAMAV_DB_DIR"
        echo "DatabaseOwner $owner"
        echo "UpdateLogFile $S_LOG_DIR/freshclam.log"
        echo "LogFileMaxSize 2M"
        echo "LogRotate yes"
        echo "LogTime yes"
        echo "Foreground yes"
        echo "Checks $FRESHCLAM_CHECKS"
        echo "DatabaseMirror database.clamav.net"
    } >"$tmp" && mv -f "$tmp" "$FRESHCLAM_CONF"
}

# freshclam in daemon mode (an update now, then $FRESHCLAM_CHECKS a day),
# in the background, under a subshell that logs its exit. That subshell is
# started twice removed, an orphan which tini (PID 1) adopts and reaps: as
# posthornd's child it would stay a zombie once it ends, since posthornd
# waits for no children. On `docker stop` it ends with the container. A
# failing freshclam (no network, a mirror down) only logs and tries again
# at the next check: posthornd keeps answering 451 4.7.1 until signatures
# are there.
start_freshclam() {
    [ "$S_ENABLE_CLAMAV" = 1 ] || return 0
    owner=$(mail_user_name) || { info "freshclam not started: no signature updates"; return 0; }
    if ! write_freshclam_conf "$owner"; then
        info "freshclam not started: cannot write $FRESHCLAM_CONF"
        return 0
    fi
    info "ClamAV: freshclam fetches the signatures into $S_CLAMAV_DB_DIR ($FRESHCLAM_CHECKS checks a day); mail gets 451 4.7.1 until they are loaded"
    (
        (
            status=0
            freshclam -d --config-file="$FRESHCLAM_CONF" || status=$?
            info "freshclam stopped (status $status): the ClamAV signatures are no longer updated"
        ) </dev/null &
    )
}

# OVERRIDE_HOSTNAME, else the container's fully qualified name
# (compose: hostname: mail.example.com). Mail needs a name with a dot.
resolve_hostname() {
    name=${OVERRIDE_HOSTNAME:-}
    if [ -z "$name" ]; then
        name=$(hostname -f 2>/dev/null || true)
        [ -n "$name" ] || name=$(hostname 2>/dev/null || cat /etc/hostname)
    fi
    name=${name%.}
    case "$name" in
        *.*) ;;
        *) fatal "OVERRIDE_HOSTNAME: the host name '$name' is not fully qualified; set hostname: mail.example.com in compose.yaml or OVERRIDE_HOSTNAME=mail.example.com" ;;
    esac
    OVERRIDE_HOSTNAME=$name
    export OVERRIDE_HOSTNAME
}

# Reads the effective values of the settings the entrypoint itself needs.
# `-c /dev/null`: a file left by the previous start must not count.
load_effective_settings() {
    SETTINGS_DUMP=$(setup -c /dev/null debug settings) || fatal "cannot resolve the settings"
    # shellcheck disable=SC2034  # read through eval
    for name in MAIL_DIR STATE_DIR LOG_DIR CONFIG_DIR DMS_VMAIL_UID DMS_VMAIL_GID SSL_TYPE SSL_CERT_PATH SSL_KEY_PATH \
            ENABLE_CLAMAV CLAMAV_DB_DIR; do
        value=$(printf '%s\n' "$SETTINGS_DUMP" | sed -n "s/^$name=//p" | sed 's/^"\(.*\)"$/\1/')
        eval "S_$name=\$value"
    done
}

# One directory: created, writable, and owned by the mail user (also after
# a DMS_VMAIL_UID/GID change, which needs the contents handed over too).
prepare_dir() {
    setting=$1 dir=$2
    mkdir -p "$dir" 2>/dev/null || fatal "$setting: cannot create $dir"
    probe="$dir/.posthorn-write-test.$$"
    if ! ( : >"$probe" ) 2>/dev/null; then
        fatal "$setting: $dir is not writable (read-only volume or wrong permissions)"
    fi
    rm -f "$probe"
    owner=$(stat -c %u:%g "$dir")
    if [ "$owner" != "$S_DMS_VMAIL_UID:$S_DMS_VMAIL_GID" ]; then
        info "$setting: giving $dir to $S_DMS_VMAIL_UID:$S_DMS_VMAIL_GID (was $owner)"
        chown -R "$S_DMS_VMAIL_UID:$S_DMS_VMAIL_GID" "$dir" || fatal "$setting: cannot change the owner of $dir"
    fi
}

prepare_dirs() {
    prepare_dir MAIL_DIR "$S_MAIL_DIR"
    prepare_dir STATE_DIR "$S_STATE_DIR"
    prepare_dir LOG_DIR "$S_LOG_DIR"
}

# The file `setup` reads by default and posthornd rereads on SIGHUP (as the
# mail user, hence group-readable by it; it may hold RELAY_PASSWORD).
write_effective_settings() {
    target=$1
    mkdir -p "$(dirname "$target")"
    tmp="$target.tmp"
    umask 027
    {
        echo "# Written by the entrypoint at every start: the effective settings."
        echo "# Change mailserver.env or the compose environment instead."
        setup -c /dev/null debug settings
    } >"$tmp" || fatal "cannot write $target"
    umask 022
    chgrp "$S_DMS_VMAIL_GID" "$tmp"
    mv -f "$tmp" "$target"
}

# docker-mailserver files in CONFIG_DIR are imported when they are new or
# changed since the last import (a checksum in STATE_DIR); the import
# itself is idempotent, so a repeated one changes nothing.
import_dms_files() {
    settings=$1
    files=""
    for f in postfix-accounts.cf postfix-virtual.cf postfix-relaymap.cf postfix-sasl-password.cf dovecot-quotas.cf; do
        [ -f "$S_CONFIG_DIR/$f" ] && files="$files $S_CONFIG_DIR/$f"
    done
    [ -n "$files" ] || return 0
    marker="$S_STATE_DIR/.dms-import.sha256"
    # shellcheck disable=SC2086
    sum=$(cat $files | sha256sum | cut -d' ' -f1)
    if [ -f "$marker" ] && [ "$(cat "$marker")" = "$sum" ]; then
        info "docker-mailserver files in $S_CONFIG_DIR unchanged since the last import"
        return 0
    fi
    info "importing docker-mailserver files from $S_CONFIG_DIR"
    if setup -c "$settings" import dms "$S_CONFIG_DIR"; then
        :
    else
        info "some lines were not imported (see above); fix them and restart, or run: setup import dms $S_CONFIG_DIR"
    fi
    printf '%s\n' "$sum" >"$marker"
}

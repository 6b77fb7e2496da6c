# TLS files for SSL_TYPE=manual and letsencrypt (sourced; POSIX sh).
# S_* are the effective settings, set by load_effective_settings (common.sh).
# shellcheck disable=SC2153
#
# posthornd reads its certificate as root at start but as the mail user on
# SIGHUP, and a Let's Encrypt key is readable by root only. So the files
# are copied into STATE_DIR/tls-manual/, owned by the mail user, and the
# effective settings point at the copies (SSL_TYPE=manual). A watcher
# compares the originals every CERT_CHECK_INTERVAL seconds (60) and, when
# they change, refreshes the copies and sends posthornd SIGHUP: renewed
# certificates apply without a restart or dropped connections.

TLS_COPY_DIR=""
TLS_SRC_CERT=""
TLS_SRC_KEY=""

# Checks that a source file exists and is readable.
tls_check_file() {
    what=$1 path=$2
    [ -n "$path" ] || fatal "SSL_TYPE=$S_SSL_TYPE: $what is not set"
    [ -e "$path" ] || fatal "SSL_TYPE=$S_SSL_TYPE: $what '$path' does not exist (is the volume mounted?)"
    if [ ! -f "$path" ] || [ ! -r "$path" ]; then
        fatal "SSL_TYPE=$S_SSL_TYPE: $what '$path' is not a readable file"
    fi
    [ -s "$path" ] || fatal "SSL_TYPE=$S_SSL_TYPE: $what '$path' is empty"
}

# /etc/letsencrypt/live/<hostname>/ or /etc/letsencrypt/live/<its domain>/
tls_find_letsencrypt() {
    live=/etc/letsencrypt/live
    for name in "$OVERRIDE_HOSTNAME" "${OVERRIDE_HOSTNAME#*.}"; do
        if [ -e "$live/$name/fullchain.pem" ]; then
            TLS_SRC_CERT="$live/$name/fullchain.pem"
            TLS_SRC_KEY="$live/$name/privkey.pem"
            return 0
        fi
    done
    fatal "SSL_TYPE=letsencrypt: no certificate: $live/$OVERRIDE_HOSTNAME/fullchain.pem (or $live/${OVERRIDE_HOSTNAME#*.}/) does not exist; mount /etc/letsencrypt"
}

tls_fingerprint() {
    cat "$TLS_SRC_CERT" "$TLS_SRC_KEY" 2>/dev/null | sha256sum | cut -d' ' -f1
}

# Copies both files (each replaced atomically) for the mail user.
tls_copy() {
    mkdir -p "$TLS_COPY_DIR"
    chown "$S_DMS_VMAIL_UID:$S_DMS_VMAIL_GID" "$TLS_COPY_DIR"
    chmod 0750 "$TLS_COPY_DIR"
    for pair in "cert.pem:$TLS_SRC_CERT" "key.pem:$TLS_SRC_KEY"; do
        dst="$TLS_COPY_DIR/${pair%%:*}" src=${pair#*:}
        install -m 0600 -o "$S_DMS_VMAIL_UID" -g "$S_DMS_VMAIL_GID" "$src" "$dst.tmp" || return 1
        mv -f "$dst.tmp" "$dst" || return 1
    done
}

prepare_tls() {
    case "$S_SSL_TYPE" in
        manual)
            tls_check_file SSL_CERT_PATH "$S_SSL_CERT_PATH"
            tls_check_file SSL_KEY_PATH "$S_SSL_KEY_PATH"
            TLS_SRC_CERT=$S_SSL_CERT_PATH TLS_SRC_KEY=$S_SSL_KEY_PATH ;;
        letsencrypt)
            tls_find_letsencrypt
            tls_check_file "the certificate" "$TLS_SRC_CERT"
            tls_check_file "the key" "$TLS_SRC_KEY" ;;
        *) return 0 ;;   # self-signed: posthornd generates it into STATE_DIR
    esac
    TLS_COPY_DIR="$S_STATE_DIR/tls-manual"
    tls_copy || fatal "SSL_TYPE=$S_SSL_TYPE: cannot copy the certificate into $TLS_COPY_DIR"
    info "SSL_TYPE=$S_SSL_TYPE: using $TLS_SRC_CERT (copied to $TLS_COPY_DIR, checked every ${CERT_CHECK_INTERVAL:-60} s)"
    SSL_TYPE=manual SSL_CERT_PATH="$TLS_COPY_DIR/cert.pem" SSL_KEY_PATH="$TLS_COPY_DIR/key.pem"
    export SSL_TYPE SSL_CERT_PATH SSL_KEY_PATH
    unset SSL_CERT_PATH__FILE SSL_KEY_PATH__FILE SSL_TYPE__FILE 2>/dev/null || true
}

# Runs in the background; $1 is the pid posthornd will have (the
# entrypoint's own, as it execs). Ends when posthornd does.
start_cert_watcher() {
    daemon_pid=$1
    [ -n "$TLS_COPY_DIR" ] || return 0
    interval=${CERT_CHECK_INTERVAL:-60}
    case "$interval" in ''|*[!0-9]*|0) fatal "CERT_CHECK_INTERVAL: invalid value '$interval'; accepted: seconds, 1 or more" ;; esac
    (
        trap - HUP
        last=$(tls_fingerprint)
        while sleep "$interval"; do
            kill -0 "$daemon_pid" 2>/dev/null || exit 0
            now=$(tls_fingerprint)
            [ "$now" != "$last" ] || continue
            # A half-written renewal is harmless: posthornd keeps its old
            # certificate when the new pair does not load, and the next
            # change (the rest of the renewal) triggers another reload.
            if ! tls_copy; then
                info "certificate files changed but cannot be copied yet; retrying in $interval s"
                continue
            fi
            last=$now
            info "certificate files changed: reloading posthornd"
            kill -HUP "$daemon_pid" 2>/dev/null || exit 0
        done
    ) </dev/null &
}

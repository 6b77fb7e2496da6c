/* SMTP AUTH (RFC 4954) for the submission ports: PLAIN (RFC 4616, with or
 * without an initial response) and LOGIN, only over TLS. The password check
 * runs through auth.c: on the worker pool, failures delayed and counted per
 * client address. See smtp_session.h. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "log.h"
#include "smtp_session.h"

/* "Username:" and "Password:" in base64, as every client expects. */
#define LOGIN_USER_PROMPT "VXNlcm5hbWU6"
#define LOGIN_PASS_PROMPT "UGFzc3dvcmQ6"

static void auth_finished(void *arg, enum auth_result result, const char *address)
{
    struct smtp_session *s = arg;
    if (!smtp_session_resume(s))
        return;
    switch (result) {
    case AUTH_OK:
        s->authed = true;
        snprintf(s->user, sizeof s->user, "%s", address);
        s->junk = 0;
        smtp_reply(s, 235, "2.7.0", "Authentication successful");
        break;
    case AUTH_FAILED:
        smtp_reply(s, 535, "5.7.8", "Error: authentication failed");
        break;
    case AUTH_THROTTLED:
        smtp_reply(s, 454, "4.7.0", "Too many failed logins from %s, try again later", s->peer);
        break;
    case AUTH_TEMPFAIL:
        smtp_reply_nocount(s, 454, "4.7.0", "Temporary authentication failure");
        break;
    }
    smtp_session_process(s);
}

static void start_login(struct smtp_session *s, const char *user, const char *password)
{
    s->phase = PHASE_COMMAND;
    s->auth_step = SMTP_AUTH_NONE;
    if (auth_login_proto(s->srv, "smtp", s->peer, user, password, auth_finished, s) < 0) {
        smtp_reply_nocount(s, 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    smtp_session_suspend(s);
}

static void plain_response(struct smtp_session *s, const char *b64, size_t len)
{
    char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
    const char *reason;
    if (sasl_plain_parse(b64, len, user, sizeof user, pass, sizeof pass, &reason) < 0) {
        s->phase = PHASE_COMMAND;
        s->auth_step = SMTP_AUTH_NONE;
        smtp_reply(s, 501, "5.5.2", "%s", reason);
        return;
    }
    start_login(s, user, pass);
    explicit_bzero(pass, sizeof pass);
}

static void ask(struct smtp_session *s, enum smtp_auth_step step, const char *prompt)
{
    s->phase = PHASE_AUTH;
    s->auth_step = step;
    conn_printf(s->conn, "334 %s\r\n", prompt);
}

void smtp_cmd_auth(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!smtp_is_submission(s)) {
        smtp_reply(s, 503, "5.5.1", "Error: authentication not enabled");
        return;
    }
    if (s->authed) {
        smtp_reply(s, 503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (s->in_mail) {
        smtp_reply(s, 503, "5.5.1", "Error: MAIL transaction in progress");
        return;
    }
    if (!s->greeted) {
        smtp_reply(s, 503, "5.5.1", "Error: send EHLO first");
        return;
    }
    const char *args = cmd->args, *end = cmd->args + cmd->args_len;
    const char *space = memchr(args, ' ', cmd->args_len);
    size_t mech_len = space ? (size_t)(space - args) : cmd->args_len;
    const char *ir = space ? space + 1 : NULL;
    size_t ir_len = space ? (size_t)(end - ir) : 0;
    if (mech_len == 5 && strncasecmp(args, "PLAIN", 5) == 0) {
        if (ir)
            plain_response(s, ir, ir_len);
        else
            ask(s, SMTP_AUTH_PLAIN, "");
    } else if (mech_len == 5 && strncasecmp(args, "LOGIN", 5) == 0) {
        if (ir && sasl_decode_value(ir, ir_len, s->auth_name, sizeof s->auth_name,
                                    SASL_USER_MAX) < 0) {
            smtp_reply(s, 501, "5.5.2", "Invalid base64 data");
        } else if (ir) {
            ask(s, SMTP_AUTH_LOGIN_PASS, LOGIN_PASS_PROMPT);
        } else {
            ask(s, SMTP_AUTH_LOGIN_USER, LOGIN_USER_PROMPT);
        }
    } else {
        smtp_reply(s, 504, "5.5.4", "Unrecognized authentication type");
    }
}

void smtp_auth_response(struct smtp_session *s, const char *line, size_t len)
{
    enum smtp_auth_step step = s->auth_step;
    if (len == 1 && line[0] == '*') {
        s->phase = PHASE_COMMAND;
        s->auth_step = SMTP_AUTH_NONE;
        smtp_reply(s, 501, "5.7.0", "Authentication aborted");
        return;
    }
    if (step == SMTP_AUTH_PLAIN) {
        plain_response(s, line, len);
        return;
    }
    if (step == SMTP_AUTH_LOGIN_USER) {
        if (sasl_decode_value(line, len, s->auth_name, sizeof s->auth_name, SASL_USER_MAX) < 0) {
            s->phase = PHASE_COMMAND;
            s->auth_step = SMTP_AUTH_NONE;
            smtp_reply(s, 501, "5.5.2", "Invalid base64 data");
            return;
        }
        ask(s, SMTP_AUTH_LOGIN_PASS, LOGIN_PASS_PROMPT);
        return;
    }
    char value[SASL_PASS_MAX + 1];
    if (sasl_decode_value(line, len, value, sizeof value, SASL_PASS_MAX) < 0) {
        s->phase = PHASE_COMMAND;
        s->auth_step = SMTP_AUTH_NONE;
        smtp_reply(s, 501, "5.5.2", "Invalid base64 data");
        return;
    }
    start_login(s, s->auth_name, value);
    explicit_bzero(value, sizeof value);
}

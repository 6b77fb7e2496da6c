/* queue_runner: the daemon's outbound scheduler. It wakes when a message is
 * queued (queue_runner_kick), when the earliest retry is due, and at least
 * every few seconds (so `setup queue flush` is seen); takes due messages
 * from the queue (on workers), groups their recipients by route
 * (relay_route_key), and runs mta_deliver attempts within concurrency
 * limits (OUTBOUND_MAX_CONNECTIONS in total, OUTBOUND_MAX_PER_DESTINATION
 * per route). Outcomes are recorded per recipient; temporary failures are
 * retried with queue_retry_delay; permanent failures and recipients still
 * pending after QUEUE_LIFETIME produce one DSN per message to the envelope
 * sender (delivered straight to a local sender's INBOX, otherwise queued
 * with a null sender; never for a null-sender message or a bounce); a
 * message still pending after QUEUE_DELAY_WARNING gets one delay DSN.
 * A message whose recipients are all final is removed. */
#ifndef POSTHORN_QUEUE_RUNNER_H
#define POSTHORN_QUEUE_RUNNER_H

#include "server.h"

struct queue_runner;

struct queue_runner *queue_runner_start(struct server *srv);
/* Something was queued or flushed: look now. */
void queue_runner_kick(struct queue_runner *r);
/* SIGTERM: start no new attempts. */
void queue_runner_stop(struct queue_runner *r);
/* Attempts and queue jobs still in flight. */
unsigned queue_runner_busy(const struct queue_runner *r);
void queue_runner_free(struct queue_runner *r);

#endif

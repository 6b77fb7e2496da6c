/* GTUBE: the Generic Test for Unsolicited Bulk Email. A message that
 * carries the GTUBE string is spam by definition (score 1000, far above
 * any SA_KILL), so that a spam setup can be tested end to end. It counts
 * only when spam scoring is on (ENABLE_SPAMASSASSIN=1), as in
 * SpamAssassin. */
#include <string.h>

#include "filters.h"

#define GTUBE "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
#define GTUBE_SCORE 1000.0

static bool enabled(const struct settings *st)
{
    return st->enable_spamassassin;
}

static void data_hook(const struct filter_txn *t, struct filter_result *r)
{
    if (!memmem(t->msg, t->len, GTUBE, sizeof GTUBE - 1)) {
        r->verdict = FILTER_ACCEPT;
        return;
    }
    r->verdict = FILTER_SCORE;
    r->score = GTUBE_SCORE;
    memcpy(r->reason, "GTUBE", sizeof "GTUBE");
}

const struct filter_ops gtube_filter = {
    .name = "gtube",
    .enabled = enabled,
    .hook = { [FILTER_DATA] = data_hook },
};

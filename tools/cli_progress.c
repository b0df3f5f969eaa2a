/* Progress on stderr: a bar on a terminal, "label [#####.....] done/total  12.3 MB/s  elapsed 0:04  ETA 0:10",
 * else a line now and then (cli_progress.h). */
#include "cli.h"
#include "cli_progress.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 28
#define REDRAW_INTERVAL_S 0.1
#define LINE_INTERVAL_S 10.0 /* off a terminal: a line at least this often... */
#define LINE_STEP 0.05       /* ...or when this share of the total is done since the last line... */
#define LINE_GAP_S 1.0       /* ...but never sooner than this after the last one */

struct cli_progress {
    pthread_mutex_t lock;
    char label[48], unit[16];
    uint64_t total, done, bytes;
    double start, last_draw;
    bool draw;  /* stderr is a TTY and not quiet: the bar */
    bool lines; /* stderr is not a TTY and not quiet: lines */
    bool drawn;
    double interval, gap; /* lines: CIRRDATA_PROGRESS_INTERVAL (default LINE_INTERVAL_S), min(LINE_GAP_S, it) */
    double last_frac;     /* lines: the share done at the last line */
    uint64_t last_done;   /* lines: done at the last line */
    unsigned nlines;
};

static void format_duration(char *buf, size_t n, double s) {
    if (s < 0 || s > 359999) {
        snprintf(buf, n, "--:--");
        return;
    }
    unsigned t = (unsigned)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%u:%02u:%02u", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%u:%02u", t / 60, t % 60);
}

/* Called with the lock held. One line, redrawn in place with \r; \033[K clears the rest. */
static void draw(cli_progress *p, double t, bool final) {
    double elapsed = t - p->start;
    uint64_t done = p->done > p->total ? p->total : p->done;
    /* An unknown total (0) draws an empty bar until it is known, or a full one when finished. */
    double frac = p->total ? (double)done / (double)p->total : final ? 1.0 : 0.0;
    char bar[BAR_WIDTH + 1];
    int fill = (int)(frac * BAR_WIDTH + 0.5);
    for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    char el[16], eta[16];
    format_duration(el, sizeof el, elapsed);
    if (final || (p->total && done == p->total))
        snprintf(eta, sizeof eta, "0:00");
    else if (done == 0 || elapsed <= 0)
        snprintf(eta, sizeof eta, "--:--");
    else
        format_duration(eta, sizeof eta, elapsed * (double)(p->total - done) / (double)done);
    double mbs = elapsed > 0 ? (double)p->bytes / 1e6 / elapsed : 0.0;
    fprintf(stderr, "\r%s [%s] %llu/%llu  %.1f MB/s  elapsed %s  ETA %s\033[K", p->label, bar, (unsigned long long)done,
            (unsigned long long)p->total, mbs, el, eta);
    fflush(stderr);
    p->drawn = true;
    p->last_draw = t;
}

/* Off a terminal, called with the lock held: "cirrdata convert: 6/12 cases (50%), 24.3 MB/s, elapsed 0:02,
 * left 0:02". */
static void draw_line(cli_progress *p, double t) {
    double elapsed = t - p->start;
    uint64_t done = p->total && p->done > p->total ? p->total : p->done;
    char el[16], left[16], count[64];
    format_duration(el, sizeof el, elapsed);
    if (p->total)
        snprintf(count, sizeof count, "%llu/%llu %s (%u%%)", (unsigned long long)done, (unsigned long long)p->total,
                 p->unit,
                 (unsigned)(((double)done * 200.0 + (double)p->total) / (2.0 * (double)p->total))); /* half up */
    else
        snprintf(count, sizeof count, "%llu %s", (unsigned long long)done, p->unit);
    if (p->total && done == p->total)
        snprintf(left, sizeof left, "0:00");
    else if (!p->total || done == 0 || elapsed <= 0)
        snprintf(left, sizeof left, "--:--");
    else
        format_duration(left, sizeof left, elapsed * (double)(p->total - done) / (double)done);
    fprintf(stderr, "cirrdata %s: %s, %.1f MB/s, elapsed %s, left %s\n", p->label, count,
            elapsed > 0 ? (double)p->bytes / 1e6 / elapsed : 0.0, el, left);
    fflush(stderr);
    p->last_draw = t;
    p->last_frac = p->total ? (double)done / (double)p->total : 0.0;
    p->last_done = p->done;
    p->nlines++;
}

/* CIRRDATA_PROGRESS_INTERVAL: seconds between lines off a terminal (a number >= 0; 0: a line per update). */
static double line_interval(void) {
    const char *s = getenv("CIRRDATA_PROGRESS_INTERVAL");
    if (!s || !*s) return LINE_INTERVAL_S;
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v >= 0) || !isfinite(v)) {
        fprintf(stderr, "cirrdata: ignoring CIRRDATA_PROGRESS_INTERVAL='%s' (seconds, a number >= 0)\n", s);
        return LINE_INTERVAL_S;
    }
    return v;
}

cli_progress *cli_progress_start(const char *label, const char *unit, uint64_t total, bool quiet) {
    cli_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
    p->total = total;
    p->start = cli_now_s();
    p->last_draw = -1e9;
    p->draw = !quiet && isatty(STDERR_FILENO);
    p->lines = !quiet && !p->draw && unit;
    if (p->lines) {
        p->interval = line_interval();
        p->gap = p->interval < LINE_GAP_S ? p->interval : LINE_GAP_S;
        p->last_draw = p->start; /* the first line comes after some work, not at the start */
    }
    if (p->draw) {
        pthread_mutex_lock(&p->lock);
        draw(p, p->start, false);
        pthread_mutex_unlock(&p->lock);
    }
    return p;
}

void cli_progress_update(cli_progress *p, uint64_t done, uint64_t bytes) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    /* Updates from several workers may arrive out of order: keep the furthest. */
    if (done > p->done) p->done = done;
    if (bytes > p->bytes) p->bytes = bytes;
    if (p->draw) {
        double t = cli_now_s();
        if (t - p->last_draw >= REDRAW_INTERVAL_S) draw(p, t, false);
    } else if (p->lines) {
        double t = cli_now_s(), since = t - p->last_draw;
        bool step = p->total && (double)p->done / (double)p->total - p->last_frac >= LINE_STEP;
        if (since >= p->gap && (since >= p->interval || step)) draw_line(p, t);
    }
    pthread_mutex_unlock(&p->lock);
}

void cli_progress_set_total(cli_progress *p, uint64_t total) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->total = total;
    pthread_mutex_unlock(&p->lock);
}

void cli_progress_finish(cli_progress *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    if (p->draw) {
        draw(p, cli_now_s(), true);
        fputc('\n', stderr);
        fflush(stderr);
    } else if (p->lines && p->nlines && p->done != p->last_done) {
        draw_line(p, cli_now_s()); /* where it ended, when the last line said less */
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

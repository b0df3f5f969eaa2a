/* Progress bar: "label [#####.....] done/total  12.3 MB/s  elapsed 0:04  ETA 0:10" on stderr. */
#include "cli.h"
#include "cli_progress.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 28
#define REDRAW_INTERVAL_S 0.1

struct cli_progress {
    pthread_mutex_t lock;
    char label[48];
    uint64_t total, done, bytes;
    double start, last_draw;
    bool draw; /* stderr is a TTY and not quiet */
    bool drawn;
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

cli_progress *cli_progress_start(const char *label, uint64_t total, bool quiet) {
    cli_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->start = cli_now_s();
    p->last_draw = -1e9;
    p->draw = !quiet && isatty(STDERR_FILENO);
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
    }
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

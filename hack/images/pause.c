/*
 * pause: the sandbox ("infra") process of a pod in the kubenpu dev cluster.
 *
 * It holds the pod's namespaces open by doing nothing: it sleeps in pause() forever,
 * exits 0 on SIGINT or SIGTERM (so a pod stops at once instead of waiting out the grace
 * period), and reaps every child on SIGCHLD (as PID 1 of a shared PID namespace it
 * inherits orphans, which would otherwise stay zombies). Built statically by
 * src/kubenpu/devcluster/images.py: gcc -static -Os.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    /* One SIGCHLD may stand for several children: reap until none is left. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static void handle(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    /* SA_NOCLDSTOP: a stopped child is not a dead one; SA_RESTART keeps pause() simple. */
    sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    if (sigaction(sig, &sa, NULL) != 0) {
        perror("pause: sigaction");
        _exit(1);
    }
}

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) {
        fputs("usage: pause (takes no arguments; sleeps until SIGINT or SIGTERM)\n", stderr);
        return 2;
    }
    if (getpid() != 1) {
        fputs("pause: warning: not running as PID 1\n", stderr);
    }
    handle(SIGINT, on_stop);
    handle(SIGTERM, on_stop);
    handle(SIGCHLD, on_child);
    for (;;) {
        pause();
    }
}

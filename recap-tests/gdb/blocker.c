/* A hung service for the gdb capsule's test: one thread blocked in a function of a known
 * name, the main thread asleep. Built static with symbols and debug info. */
#include <pthread.h>
#include <unistd.h>

__attribute__((noinline)) void recap_blocked_here(void) {
    for (;;)
        pause();
}

static void *worker(void *arg) {
    recap_blocked_here();
    return arg;
}

int main(void) {
    pthread_t thread;
    pthread_create(&thread, 0, worker, 0);
    for (;;)
        sleep(1000);
}

/*
 * LD_PRELOAD shim for Janus on loopback.
 *
 * Janus (src/ice.c) skips every interface flagged IFF_LOOPBACK when it gathers candidates,
 * and no configuration option changes that: on a machine (or network namespace) whose only
 * interface is `lo`, `configure` then fails with error 490 "Error setting ICE locally".
 * Clearing the flag in getifaddrs() makes Janus gather 127.0.0.1 like any other address;
 * `ice_enforce_list = "lo"` in janus.jcfg then keeps it to that interface.
 *
 * Build: gcc -shared -fPIC -O2 -o noloopflag.so noloopflag.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>

int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **);
    if (!real)
        real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int r = real(ifap);
    if (r == 0)
        for (struct ifaddrs *i = *ifap; i; i = i->ifa_next)
            i->ifa_flags &= ~IFF_LOOPBACK;
    return r;
}

/* benchmarks/scale_bench.py --llama-preload: an LD_PRELOAD shim: refuse AMX tile permission (arch_prctl ARCH_REQ_XCOMP_PERM), so that
   ggml's AMX init fails and llama.cpp uses its AVX-512 kernels. This VM's CPUID and kernel
   advertise AMX but tile instructions trap (SIGILL). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>

long syscall(long number, ...) {
    va_list ap;
    va_start(ap, number);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_arch_prctl && a1 == 0x1023) {
        errno = EPERM;
        return -1;
    }
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a1, a2, a3, a4, a5, a6);
}

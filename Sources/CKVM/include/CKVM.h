// C shim: the kernel's KVM ABI as linux/kvm.h defines it (linux-libc-dev),
// and the non-variadic ioctl wrappers. Swift imports the structs from here;
// nothing is re-typed by hand. Xen's public ABI is the CXen shim's.
#ifndef PVH_CKVM_H
#define PVH_CKVM_H

#include <stdint.h>
#include <stddef.h>
#include <linux/kvm.h>

// Non-variadic ioctl wrappers (Swift cannot call variadic C functions).
// Each returns the ioctl's result; on -1 the caller reads errno.
int pvh_ioctl(int fd, unsigned long request, unsigned long arg);
int pvh_ioctl_ptr(int fd, unsigned long request, void *arg);
int pvh_errno(void);

// KVM-specific constants and helpers (ioctl numbers, kvm_run accessors).
#include "pvh_kvm.h"

#endif

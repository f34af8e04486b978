// C shim: the kernel's KVM ABI and Xen's public ABI, as their own headers
// define them (linux-libc-dev, libxen-dev). Swift imports the structs from
// here; nothing is re-typed by hand.
#ifndef PVH_CKVM_H
#define PVH_CKVM_H

#include <stdint.h>
#include <stddef.h>
#include <linux/kvm.h>

#include <xen/xen.h>
#include <xen/version.h>
#include <xen/sched.h>
#include <xen/memory.h>
#include <xen/vcpu.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/elfnote.h>
#include <xen/errno.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/arch-x86/cpuid.h>
#include <xen/arch-x86/hvm/start_info.h>

// Non-variadic ioctl wrappers (Swift cannot call variadic C functions).
// Each returns the ioctl's result; on -1 the caller reads errno.
int pvh_ioctl(int fd, unsigned long request, unsigned long arg);
int pvh_ioctl_ptr(int fd, unsigned long request, void *arg);
int pvh_errno(void);

// KVM-specific constants and helpers (ioctl numbers, kvm_run accessors).
#include "pvh_kvm.h"

#endif

// C shim: ThreadSanitizer's mutex annotations (compiler-rt's
// sanitizer/tsan_interface.h, "__tsan_mutex_*"), for `Locking.Lock`.
//
// Synchronization.Mutex on Linux takes a contended lock through a PI futex
// in the uninstrumented libswiftSynchronization (FUTEX_LOCK_PI hands the
// lock over in the kernel), so ThreadSanitizer sees no acquire and reports
// two accesses under the same lock as a race. These calls tell it where
// the lock is taken and released. The lock is named by an address-sized
// integer (the identity of an object the lock owns), so Swift passes no
// pointer. Built without -fsanitize=thread they do nothing; Lock calls
// them only under the package's TSanAnnotations trait.
#ifndef PVH_CTSAN_H
#define PVH_CTSAN_H

#include <stdint.h>

/// Before the lock is requested (__tsan_mutex_pre_lock).
void pvh_tsan_mutex_pre_lock(uintptr_t lock);
/// The lock is held (__tsan_mutex_post_lock): acquire.
void pvh_tsan_mutex_post_lock(uintptr_t lock);
/// About to release it (__tsan_mutex_pre_unlock): release.
void pvh_tsan_mutex_pre_unlock(uintptr_t lock);
/// Released (__tsan_mutex_post_unlock).
void pvh_tsan_mutex_post_unlock(uintptr_t lock);
/// The lock's object is going away (__tsan_mutex_destroy).
void pvh_tsan_mutex_destroy(uintptr_t lock);

#endif

// See CTSan.h. The lock's integer is an object address; converting it back
// is how the annotation interface names a mutex (it is never dereferenced).
#include "CTSan.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PVH_HAVE_TSAN 1
#endif
#endif

#ifdef PVH_HAVE_TSAN
#include <sanitizer/tsan_interface.h>

void pvh_tsan_mutex_pre_lock(uintptr_t lock) { __tsan_mutex_pre_lock((void *)lock, 0); }
void pvh_tsan_mutex_post_lock(uintptr_t lock) { __tsan_mutex_post_lock((void *)lock, 0, 0); }
void pvh_tsan_mutex_pre_unlock(uintptr_t lock) { __tsan_mutex_pre_unlock((void *)lock, 0); }
void pvh_tsan_mutex_post_unlock(uintptr_t lock) { __tsan_mutex_post_unlock((void *)lock, 0); }
void pvh_tsan_mutex_destroy(uintptr_t lock) { __tsan_mutex_destroy((void *)lock, 0); }
#else
void pvh_tsan_mutex_pre_lock(uintptr_t lock) { (void)lock; }
void pvh_tsan_mutex_post_lock(uintptr_t lock) { (void)lock; }
void pvh_tsan_mutex_pre_unlock(uintptr_t lock) { (void)lock; }
void pvh_tsan_mutex_post_unlock(uintptr_t lock) { (void)lock; }
void pvh_tsan_mutex_destroy(uintptr_t lock) { (void)lock; }
#endif

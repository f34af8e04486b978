// The one lock type of pvh: Synchronization.Mutex, made visible to
// ThreadSanitizer (docs/ARCHITECTURE.md, Sanitizers).
//
// On Linux, Mutex takes a contended lock in libswiftSynchronization's
// `_lockSlow` (a spin, then FUTEX_LOCK_PI, where the kernel hands the lock
// over) and releases it through FUTEX_UNLOCK_PI when there are waiters.
// That library is not instrumented and TSan does not intercept futex(2),
// so after a contended hand-over TSan sees no acquire and reports two
// accesses made under the same lock as a race. Under the package's
// `TSanAnnotations` trait (scripts/sanitize.sh thread sets it) `Lock`
// tells TSan where it is taken and released through its mutex annotations
// (CTSan); TSan then treats it as a mutex: accesses under it are ordered,
// and accesses outside it are still checked. Without the trait `Lock` is
// exactly a Mutex: every member is inlined into the caller and adds
// nothing.

import CTSan
import Synchronization

/// A value reachable only while its lock is held: `Synchronization.Mutex`
/// with the same interface (`withLock`), annotated for ThreadSanitizer in
/// sanitizer builds. Use it wherever a Mutex would do.
@frozen
public struct Lock<Value: ~Copyable>: ~Copyable, Sendable {
    @usableFromInline
    let mutex: Mutex<Value>

    #if TSanAnnotations
    /// Names this lock to TSan: its object identity is the mutex address
    /// the annotations use (Lock itself has no stable address).
    @usableFromInline
    let identity = AnnotationIdentity()
    #endif

    /// A lock holding `initialValue`.
    @_alwaysEmitIntoClient
    @_transparent
    public init(_ initialValue: consuming sending Value) {
        mutex = Mutex(initialValue)
    }

    /// Runs `body` with the value while holding the lock; the lock is
    /// released when `body` returns or throws (Mutex.withLock).
    @_alwaysEmitIntoClient
    @_transparent
    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        #if TSanAnnotations
        let name = identity.name
        pvh_tsan_mutex_pre_lock(name)
        defer { pvh_tsan_mutex_post_unlock(name) }
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            pvh_tsan_mutex_post_lock(name)
            defer { pvh_tsan_mutex_pre_unlock(name) }
            return try body(&value)
        }
        #else
        return try mutex.withLock(body)
        #endif
    }
}

#if TSanAnnotations
/// The object whose address names one `Lock` to TSan; it lives as long
/// as the lock, and tells TSan the mutex is gone when it goes.
@usableFromInline
final class AnnotationIdentity: Sendable {
    @usableFromInline
    init() {}

    @usableFromInline
    var name: UInt { UInt(bitPattern: ObjectIdentifier(self)) }

    deinit { pvh_tsan_mutex_destroy(name) }
}
#endif

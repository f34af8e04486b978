/// A callback that can be set, replaced or removed from any thread and
/// called from any thread: what a `Lock` of an optional closure would be,
/// without its cost.
///
/// A closure kept directly as a `Lock`'s value (`Lock<(() -> Void)?>`)
/// grows: `withLock` passes the value `inout` through a generic parameter,
/// the closure is reabstracted on the way in and out, and what is written
/// back is the wrapped closure, two thunks deeper on every access, so each
/// call walks a chain as long as the slot's history until the stack
/// overflows (docs/ARCHITECTURE.md, Sanitizers; `LockingTests` checks that
/// no such lock is written). Here the lock holds a reference to an
/// immutable box, so reading it copies a pointer and the closure is called
/// as it was stored.
public final class CallbackSlot<Argument>: Sendable {
    private final class Box: Sendable {
        let call: @Sendable (Argument) -> Void
        init(_ call: @escaping @Sendable (Argument) -> Void) { self.call = call }
    }

    private let box: Lock<Box?>

    /// A slot holding `callback` (none by default).
    public init(_ callback: (@Sendable (Argument) -> Void)? = nil) {
        box = Lock(callback.map(Box.init))
    }

    /// Replaces the callback (nil: removes it). A call under way on another
    /// thread finishes with the one it read.
    public func set(_ callback: (@Sendable (Argument) -> Void)?) {
        let new = callback.map(Box.init)
        box.withLock { $0 = new }
    }

    /// Whether a callback is set.
    public var isSet: Bool { box.withLock { $0 != nil } }

    /// Calls the callback, outside the lock, if one is set; whether one was.
    @discardableResult
    public func callAsFunction(_ argument: Argument) -> Bool {
        guard let current = box.withLock({ $0 }) else { return false }
        current.call(argument)
        return true
    }
}

extension CallbackSlot where Argument == Void {
    /// A slot holding `callback` (none by default).
    public convenience init(_ callback: (@Sendable () -> Void)?) {
        self.init(callback.map { call in { @Sendable (_: Void) in call() } })
    }

    /// Replaces the callback (nil: removes it).
    public func set(_ callback: (@Sendable () -> Void)?) {
        set(callback.map { call in { @Sendable (_: Void) in call() } })
    }

    /// Calls the callback, outside the lock, if one is set; whether one was.
    @discardableResult
    public func callAsFunction() -> Bool { self(()) }
}

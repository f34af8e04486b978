import XenABI
import XenRing
import XenStore

/// Why the guest side failed: its own limits, the backend's ring, or a
/// wait that ran out.
public enum BlockFrontendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Every entry of the grant frames set up is in use.
    case outOfGrantReferences
    /// The ring's indices or memory are broken (a backend bug: it produced
    /// more responses than requests).
    case ring(XenRingError)
    /// An event-channel operation failed.
    case eventChannel(XenErrno)
    /// A store request failed.
    case store(XenStoreError)
    /// No response came within the time given.
    case timedOut(Duration)

    public var description: String {
        switch self {
        case .outOfGrantReferences: "no free grant reference"
        case .ring(let e): "ring: \(e)"
        case .eventChannel(let e): "event channel: \(e)"
        case .store(let e): "store: \(e)"
        case .timedOut(let d): "no response within \(d)"
        }
    }
}

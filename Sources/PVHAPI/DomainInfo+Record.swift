import PVHAPIModels
import Toolstack

extension DomainInfo {
    /// A registry record as the API shows it.
    public init(_ record: DomainRecord, cpuSeconds: Double, console: String? = nil) {
        self.init(name: record.name, domid: Int(record.id.rawValue), uuid: record.uuid.description, state: record.state.name,
                  flags: record.state.flags, memoryMiB: record.configuration.memoryMiB, vcpus: record.configuration.vcpus,
                  cpuTime: cpuSeconds, startTime: record.startTime, pid: record.processID.map(Int.init), restarts: record.restarts, lastEnd: record.lastEnd,
                  config: JSON(record.configuration.json), console: console)
    }
}

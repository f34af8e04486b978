// Fuzz target: xl's disk and vif specification parsers (DeviceSpecs:
// xl-disk-configuration(5), xl-network-configuration(5)), the vdev, MAC and
// rate parsers under them, and xl's CPU lists (`cpus=`, CPUList). Input: UTF-8 text (invalid sequences replaced),
// one specification a line; every line goes to every parser. Checks: parsing
// is deterministic, a parsed MAC prints back to itself, a parsed vdev keeps
// its name, validating a list of accepted specifications returns, and a CPU
// list parses back from its text and resolves within the host's CPUs.
import FuzzSupport
import DeviceSpecs

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_devicespecs_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

private func fuzzOne(_ input: [UInt8]) {
    let text = String(decoding: input, as: UTF8.self)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).prefix(16).map(String.init)
    var disks: [DiskSpecification] = []
    var vifs: [NetworkInterfaceSpecification] = []
    for line in lines {
        let disk = Result { () throws(DiskSpecificationError) in try DiskSpecification(parsing: line) }
        precondition(disk == Result { () throws(DiskSpecificationError) in try DiskSpecification(parsing: line) },
                     "disk parse not deterministic")
        if case .success(let d) = disk { disks.append(d) }
        let vif = Result { () throws(NetworkInterfaceSpecificationError) in
            try NetworkInterfaceSpecification(parsing: line)
        }
        if case .success(let v) = vif {
            vifs.append(v)
            var generator = SystemRandomNumberGenerator()
            _ = v.resolvedMAC(using: &generator)
        }
        if let mac = MACAddress(parsing: line) {
            precondition(MACAddress(parsing: mac.description) == mac, "MAC does not print back: \(line)")
        }
        if let vdev = try? VirtualDevice(parsing: line) {
            precondition(vdev.name == line && (try? VirtualDevice(parsing: vdev.name)) == vdev, "vdev round trip")
        }
        _ = try? NetworkRateLimit(parsing: line)
        if let cpus = try? CPUList(parsing: line) {
            precondition((try? CPUList(parsing: cpus.text)) == cpus, "CPU list does not parse back: \(line)")
            // A made-up host: 6 CPUs, node 0 = 0-2, node 1 = 3-5, node 2 past them.
            let nodes = [0: [0, 1, 2], 1: [3, 4, 5], 2: [64]]
            if let set = try? cpus.resolve(cpuCount: 6, nodeCPUs: { nodes[$0] }) {
                precondition(set.allSatisfy { (0..<6).contains($0) }, "CPU list resolved past the host: \(line)")
            }
        }
    }
    _ = Result { () throws(DiskSpecificationError) in try DiskSpecification.validate(disks) }
    _ = Result { () throws(NetworkInterfaceSpecificationError) in try NetworkInterfaceSpecification.validate(vifs) }
    _ = Result { () throws(DiskSpecificationError) in try DiskSpecification.parse(lines) }
    _ = Result { () throws(NetworkInterfaceSpecificationError) in try NetworkInterfaceSpecification.parse(lines) }
}

// swift-tools-version: 6.2
// pvh's libFuzzer targets (issue 13 item 1). A package of their own so that
// -sanitize=fuzzer never reaches the main package's products: scripts/fuzz.sh
// builds this package with `-Xswiftc -sanitize=fuzzer`, which instruments the
// libraries below for coverage and links libFuzzer's main into each target.
// Each target is one file whose LLVMFuzzerTestOneInput calls the real library
// code and checks its invariants.
import PackageDescription

/// Each entry point is a library-style file (no top-level code): libFuzzer
/// provides `main`.
let fuzzSettings: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let package = Package(
    name: "pvh-fuzz",
    dependencies: [.package(name: "pvh", path: "..")],
    targets: [
        // libFuzzer's LLVMFuzzerRunDriver, declared for Swift.
        .target(name: "CFuzzerDriver"),
        .executableTarget(
            name: "fuzz-xenstore", dependencies: ["CFuzzerDriver", .product(name: "PVHFuzzable", package: "pvh")],
            swiftSettings: fuzzSettings),
        .executableTarget(
            name: "fuzz-xlconfig", dependencies: ["CFuzzerDriver", .product(name: "PVHFuzzable", package: "pvh")],
            swiftSettings: fuzzSettings),
        .executableTarget(
            name: "fuzz-devicespecs", dependencies: ["CFuzzerDriver", .product(name: "PVHFuzzable", package: "pvh")],
            swiftSettings: fuzzSettings),
        .executableTarget(
            name: "fuzz-pvhboot", dependencies: ["CFuzzerDriver", .product(name: "PVHFuzzable", package: "pvh")],
            swiftSettings: fuzzSettings),
        .executableTarget(
            name: "fuzz-hypercalls", dependencies: ["CFuzzerDriver", .product(name: "PVHFuzzable", package: "pvh")],
            swiftSettings: fuzzSettings),
    ]
)

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
/// One fuzz target: Sources/fuzz-NAME, one Swift file that defines
/// `LLVMFuzzerTestOneInput` as a library-style file (no top-level code).
/// SwiftPM defines the executable's `main` as `fuzz_NAME_main`, which the
/// file defines to call CFuzzerDriver's `pvh_fuzz_main` (a linker alias,
/// `--defsym`, ends up an unrelocated address in lld's PIE output).
func fuzzTarget(_ name: String) -> Target {
    .executableTarget(
        name: "fuzz-\(name)", dependencies: ["FuzzSupport", .product(name: "PVHFuzzable", package: "pvh")],
        swiftSettings: [.unsafeFlags(["-parse-as-library"])])
}

let package = Package(
    name: "pvh-fuzz",
    dependencies: [.package(name: "pvh", path: "..")],
    targets: [
        // libFuzzer's driver as every target's main.
        .target(name: "CFuzzerDriver"),
        // The input reader and entry helpers every target shares.
        .target(name: "FuzzSupport", dependencies: ["CFuzzerDriver", .product(name: "PVHFuzzable", package: "pvh")]),
        fuzzTarget("xenstore"),
        fuzzTarget("xlconfig"),
        fuzzTarget("devicespecs"),
        fuzzTarget("pvhboot"),
        fuzzTarget("hypercalls"),
        fuzzTarget("blkif"),
        fuzzTarget("netif"),
        fuzzTarget("grants"),
        fuzzTarget("byterings"),
        fuzzTarget("apijson"),
    ]
)

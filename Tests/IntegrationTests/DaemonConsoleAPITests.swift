import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension DaemonTests {
    /// curl on the daemon's API socket (Debian's curl, scripts/deps.txt).
    func curl(_ arguments: [String], path: String) -> [String] {
        ["-sS", "--unix-socket", api] + arguments + ["http://localhost\(path)"]
    }

    @Test("the console over HTTP: the banner from the relay's buffer, input echoed by the guest, the stream ends with the domain")
    func consoleOverHTTP() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        // console_ring writes its hello line, then waits for a typed line and echoes it.
        let cfg = try config("eps", "extra = \"pvh.scenarios=console_ring,control pvh.console_input=1 pvh.console_timeout=120000\"\n")
        #expect(try pvh(["create", cfg]).status == 0)
        let hello = "PVHTEST-CONSOLE-RING hello"

        // A follow stream: the hello line (from the buffer or live).
        let stream = try ChildProcess("/usr/bin/curl", curl(["-N", "--max-time", "300"], path: "/v1/domains/eps/console"))
        defer { stream.stop() }
        #expect(stream.waitForLine(startingWith: hello, timeout: .seconds(120)) != nil, "\(stream.output) \(stream.errors)")

        // Input over the API reaches the guest as pvh console's typed bytes do: it echoes the line.
        let sent = try runCommand("/usr/bin/curl", curl(["--max-time", "60", "-H", "Content-Type: application/octet-stream",
                                                         "--data-binary", "ping over http\r"], path: "/v1/domains/eps/console"),
                                  timeout: .seconds(90))
        #expect(sent.status == 0 && sent.stdout == "{\"accepted\":15}\n", "\(sent)")
        #expect(stream.waitForLine(startingWith: "PVHTEST-CONSOLE-ECHO ping over http", timeout: .seconds(120)) != nil,
                "\(stream.output) \(stream.errors)")

        // follow=false: the buffer only, which now holds both lines (written before this request).
        let backlog = try runCommand("/usr/bin/curl", curl(["--max-time", "30"], path: "/v1/domains/eps/console?follow=false"),
                                     timeout: .seconds(60))
        #expect(backlog.status == 0 && backlog.stdout.contains(hello) && backlog.stdout.contains("PVHTEST-CONSOLE-ECHO ping over http"),
                "\(backlog)")
        // pvh console still attaches beside the HTTP stream (the same relay) and replays the same buffer.
        let attached = try ChildProcess(Env.pvhBinary, ["console", "eps"], environment: environment, input: true)
        defer { attached.stop() }
        #expect(attached.waitForLine(startingWith: "PVHTEST-CONSOLE-ECHO ping over http", timeout: .seconds(30)) != nil,
                "\(attached.output) \(attached.errors)")
        attached.send([0x1d])
        #expect(attached.waitForExit(timeout: .seconds(30)) == 0, "\(attached.errors)")

        // An unknown domain: 404 with the error JSON.
        let unknown = try runCommand("/usr/bin/curl", curl(["--max-time", "30", "-w", "%{http_code}", "-o", "/dev/null"],
                                                           path: "/v1/domains/nosuch/console"), timeout: .seconds(60))
        #expect(unknown.stdout.hasPrefix("404"), "\(unknown)")

        // The domain goes away: the stream ends (curl exits 0: the chunked answer was whole).
        #expect(try pvh(["destroy", "eps"]).status == 0)
        #expect(stream.waitForExit(timeout: .seconds(30)) == 0, "\(stream.errors)")

        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
    }
}

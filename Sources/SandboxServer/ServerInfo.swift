import DeckhandCore
import Foundation

/// What `/server_info` reports, read from `/proc` and `statvfs`: uptime, idle time, CPU, memory, disk.
struct ServerInfo {
    let started: ContinuousClock.Instant
    let startedCPU: Double
    let workingDirectory: String

    init(workingDirectory: String) {
        self.started = .now
        self.startedCPU = Self.processCPUSeconds()
        self.workingDirectory = workingDirectory
    }

    /// The `/server_info` body; `lastActivity` is when the last authenticated request arrived.
    func snapshot(lastActivity: ContinuousClock.Instant) -> JSONValue {
        let now = ContinuousClock.now
        let uptime = (now - started).seconds
        let cpuSeconds = Self.processCPUSeconds() - startedCPU
        let cpuPercent = uptime > 0 ? cpuSeconds / uptime * 100 : 0
        let (rss, vms) = Self.processMemory()
        let total = Self.totalMemory()
        var disk: JSONValue = [:]
        var stats = statvfs()
        if statvfs(workingDirectory, &stats) == 0 || statvfs("/", &stats) == 0 {
            let blockSize = Double(stats.f_frsize)
            let totalBytes = Double(stats.f_blocks) * blockSize
            let freeBytes = Double(stats.f_bavail) * blockSize
            let used = totalBytes - Double(stats.f_bfree) * blockSize
            disk = [
                "total": .number(totalBytes), "used": .number(used), "free": .number(freeBytes),
                "percent": .number(totalBytes > 0 ? (used / totalBytes * 100).rounded(toPlaces: 1) : 0),
            ]
        }
        return [
            "uptime": .number(uptime),
            "idle_time": .number((now - lastActivity).seconds),
            "resources": [
                "cpu_percent": .number(cpuPercent.rounded(toPlaces: 1)),
                "memory": [
                    "rss": .number(Double(rss)), "vms": .number(Double(vms)),
                    "percent": .number(total > 0 ? (Double(rss) / Double(total) * 100).rounded(toPlaces: 2) : 0),
                ],
                "disk": disk,
            ],
        ]
    }

    /// User plus system CPU seconds of this process (`/proc/self/stat` fields 14 and 15).
    static func processCPUSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name: state is field 3, so utime (14) and stime (15) are at offsets 11 and 12.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (user + system) / (ticks > 0 ? ticks : 100)
    }

    /// Resident and virtual size in bytes (`/proc/self/statm`).
    static func processMemory() -> (rss: Int, vms: Int) {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return (0, 0) }
        let fields = statm.split(separator: " ")
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard fields.count > 1, let size = Int(fields[0]), let resident = Int(fields[1]) else { return (0, 0) }
        return (resident * page, size * page)
    }

    /// `MemTotal` from `/proc/meminfo`, in bytes.
    static func totalMemory() -> Int {
        guard let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return 0 }
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kilobytes = Int(parts[1]) { return kilobytes * 1024 }
        }
        return 0
    }
}

extension Double {
    func rounded(toPlaces places: Int) -> Double {
        let factor = pow(10, Double(places))
        return (self * factor).rounded() / factor
    }
}

import DeckhandCore
import DeckhandTesting
import Foundation
import Messaging
import Testing

/// `deploy/kubernetes` (issue 18): each overlay rendered by kustomize (`kubectl kustomize`) and validated offline
/// by `scripts/kubernetes/render.py` — the Kubernetes API's own schemas (strict) for 1.30 and 1.37, KEDA's for its
/// kinds — then held to Deckhand's own rules: every role probed and bounded, every Deployment under a
/// PodDisruptionBudget, a grace period longer than the role's drain, and every scaler on a queue `Topology` declares.
struct KubernetesManifestTests {
    static let overlays = ["deploy/kubernetes/overlays/production", "deploy/kubernetes/overlays/laptop"]

    /// `render.py` on `overlays` (or on `yaml` given on its standard input); the objects by overlay, or the
    /// script's complaint.
    static func render(
        _ overlays: [String],
        yaml: String? = nil
    ) async throws -> Result<[String: [JSONValue]], DeckhandError> {
        let python = try TestEnvironment.tool("DECKHAND_KUBERNETES_PYTHON", madeBy: "scripts/kubernetes/venv.sh")
        var arguments = ["scripts/kubernetes/render.py"]
        var input: String?
        if let yaml {
            arguments += ["--stdin"]
            input = yaml
        }
        let (status, output) = try await TestEnvironment.launchDetached(
            "/bin/sh",
            [
                "-c", input == nil ? "exec \"$0\" \"$@\" 2>&1" : "printf '%s' \"$RENDER_INPUT\" | \"$0\" \"$@\" 2>&1",
                python,
            ]
                + arguments + overlays,
            environment: input.map { ["RENDER_INPUT": $0] } ?? [:]
        )
        guard status == 0 else { return .failure(DeckhandError(.invalidConfiguration, output)) }
        guard case .object(let rendered) = try JSONValue(parsing: Array(output.utf8)) else {
            return .failure(DeckhandError(.protocolViolation, "render.py printed no object: \(output.prefix(500))"))
        }
        return .success(rendered.mapValues { $0.arrayValue ?? [] })
    }

    /// What Deckhand asks of its manifests beyond the schemas; each problem names its object.
    static func violations(_ objects: [JSONValue], topology: Topology = Topology()) -> [String] {
        var found: [String] = []
        func name(_ object: JSONValue) -> String {
            "\(object["kind"]?.stringValue ?? "?")/\(object["metadata"]?["name"]?.stringValue ?? "?")"
        }
        func matches(_ selector: JSONValue?, _ labels: JSONValue?) -> Bool {
            guard case .object(let wanted) = selector?["matchLabels"] else { return false }
            return wanted.allSatisfy { labels?[$0.key]?.stringValue == $0.value.stringValue }
        }
        let workloads = objects.filter { ["Deployment", "StatefulSet"].contains($0["kind"]?.stringValue ?? "") }
        let deployments = Set(objects.filter { $0["kind"]?.stringValue == "Deployment" }.map(name))
        let budgets = objects.filter { $0["kind"]?.stringValue == "PodDisruptionBudget" }
        let declared = Set([topology.conversationQueue, topology.runtimeQueue])
        for workload in workloads {
            let pod = workload["spec"]?["template"]
            for container in pod?["spec"]?["containers"]?.arrayValue ?? [] {
                let where_ = "\(name(workload)) container \(container["name"]?.stringValue ?? "?")"
                for probe in ["readinessProbe", "livenessProbe"] where container[probe] == nil {
                    found.append("\(where_) has no \(probe)")
                }
                let resources = container["resources"]
                for (part, key) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")]
                where resources?[part]?[key] == nil {
                    found.append("\(where_) has no resources.\(part).\(key)")
                }
                // A worker's drain must end before the kubelet's SIGKILL.
                let grace = pod?["spec"]?["terminationGracePeriodSeconds"]?.intValue ?? 30
                for variable in container["env"]?.arrayValue ?? []
                where variable["name"]?.stringValue?.hasSuffix("_SHUTDOWN_TIMEOUT") == true {
                    let value = variable["value"]?.stringValue ?? ""
                    let seconds = Int(value.hasSuffix("s") ? String(value.dropLast()) : value) ?? Int.max
                    if seconds >= grace {
                        found.append("\(where_): \(variable["name"]?.stringValue ?? "") \(value) ≥ grace \(grace) s")
                    }
                }
            }
            if !budgets.contains(where: { matches($0["spec"]?["selector"], pod?["metadata"]?["labels"]) }) {
                found.append("\(name(workload)) has no PodDisruptionBudget")
            }
        }
        for scaled in objects where scaled["kind"]?.stringValue == "ScaledObject" {
            let target = "Deployment/" + (scaled["spec"]?["scaleTargetRef"]?["name"]?.stringValue ?? "")
            if !deployments.contains(target) { found.append("\(name(scaled)) scales \(target), which is not here") }
            for trigger in scaled["spec"]?["triggers"]?.arrayValue ?? [] {
                let queue = trigger["metadata"]?["queueName"]?.stringValue ?? ""
                if trigger["type"]?.stringValue == "rabbitmq", !declared.contains(queue) {
                    found.append("\(name(scaled)) scales on queue \(queue), which Topology does not declare")
                }
            }
        }
        for autoscaler in objects where autoscaler["kind"]?.stringValue == "HorizontalPodAutoscaler" {
            let target = "Deployment/" + (autoscaler["spec"]?["scaleTargetRef"]?["name"]?.stringValue ?? "")
            if !deployments.contains(target) { found.append("\(name(autoscaler)) scales \(target), which is not here") }
            for metric in autoscaler["spec"]?["metrics"]?.arrayValue ?? [] {
                guard let queue = metric["external"]?["metric"]?["selector"]?["matchLabels"]?["queue"]?.stringValue
                else { continue }
                if !declared.contains(queue) {
                    found.append("\(name(autoscaler)) scales on queue \(queue), which Topology does not declare")
                }
            }
        }
        return found
    }

    /// Every overlay renders, passes the schemas and the rules, and scales every pool — both worker pools on their
    /// queues, the gateways on CPU: KEDA in production, HPAs on a laptop.
    @Test func theOverlaysRenderValidateAndScaleEveryPool() async throws {
        let rendered = try await Self.render(Self.overlays).get()
        for overlay in Self.overlays {
            let objects = try #require(rendered[overlay], "\(overlay) rendered")
            #expect(Self.violations(objects).isEmpty, "\(overlay): \(Self.violations(objects))")
            let kinds = objects.map { "\($0["kind"]?.stringValue ?? "")/\($0["metadata"]?["name"]?.stringValue ?? "")" }
            for role in ["gateway", "conversation-worker", "runtime-worker"] {
                #expect(kinds.contains("Deployment/deckhand-\(role)"), "\(overlay) runs \(role)")
            }
            #expect(kinds.contains("Job/deckhand-migrate") && kinds.contains("Ingress/deckhand-gateway"))
            let scaler = overlay.hasSuffix("production") ? "ScaledObject" : "HorizontalPodAutoscaler"
            for pool in ["conversation-worker", "runtime-worker", "gateway"] {
                #expect(kinds.contains("\(scaler)/deckhand-\(pool)"), "\(overlay) scales \(pool) with a \(scaler)")
            }
            // The gateways hold no queue: they scale on CPU alone; in production never below two (a laptop runs one
            // of each).
            let gateway = try #require(
                objects.first {
                    $0["kind"]?.stringValue == scaler && $0["metadata"]?["name"]?.stringValue == "deckhand-gateway"
                }
            )
            let spec = gateway["spec"]
            let minimum = (spec?["minReplicaCount"] ?? spec?["minReplicas"])?.intValue
            #expect(minimum == (scaler == "ScaledObject" ? 2 : 1), "\(overlay)")
            let signals =
                scaler == "ScaledObject"
                ? (spec?["triggers"]?.arrayValue ?? []).map { $0["type"]?.stringValue ?? "" }
                : (spec?["metrics"]?.arrayValue ?? []).map { $0["resource"]?["name"]?.stringValue ?? "" }
            #expect(signals == ["cpu"], "\(overlay): \(signals)")
            #expect(
                objects.allSatisfy {
                    $0["metadata"]?["namespace"]?.stringValue == "deckhand" || $0["kind"]?.stringValue == "Namespace"
                }
            )
        }
    }

    /// The rules fail on what they guard: a probe taken away, resources taken away, a Deployment's budget gone, a
    /// drain as long as its grace, and a scaler on a queue Topology does not declare.
    @Test func theRulesFailOnAMissingProbeMissingResourcesAndAnUndeclaredQueue() async throws {
        let production = try #require(try await Self.render([Self.overlays[0]]).get()[Self.overlays[0]])
        #expect(Self.violations(production).isEmpty)
        func edited(_ kind: String, _ name: String, _ edit: (inout JSONValue) -> Void) -> [JSONValue] {
            production.map { object in
                guard object["kind"]?.stringValue == kind, object["metadata"]?["name"]?.stringValue == name else {
                    return object
                }
                var object = object
                edit(&object)
                return object
            }
        }
        func firstContainer(_ object: inout JSONValue, _ edit: (inout JSONValue) -> Void) {
            var containers = object["spec"]?["template"]?["spec"]?["containers"]?.arrayValue ?? []
            edit(&containers[0])
            object["spec"]?["template"]?["spec"]?["containers"] = .array(containers)
        }
        let noProbe = edited("Deployment", "deckhand-conversation-worker") { object in
            firstContainer(&object) { $0["readinessProbe"] = nil }
        }
        #expect(
            Self.violations(noProbe) == [
                "Deployment/deckhand-conversation-worker container conversation-worker has no readinessProbe"
            ]
        )
        let noResources = edited("Deployment", "deckhand-gateway") { object in
            firstContainer(&object) { $0["resources"] = nil }
        }
        #expect(Self.violations(noResources).count == 3)
        #expect(
            Self.violations(noResources).allSatisfy {
                $0.hasPrefix("Deployment/deckhand-gateway container gateway has no resources.")
            }
        )
        let noBudget = production.filter {
            !($0["kind"]?.stringValue == "PodDisruptionBudget"
                && $0["metadata"]?["name"]?.stringValue == "deckhand-runtime-worker")
        }
        #expect(Self.violations(noBudget) == ["Deployment/deckhand-runtime-worker has no PodDisruptionBudget"])
        let shortGrace = edited("Deployment", "deckhand-runtime-worker") {
            $0["spec"]?["template"]?["spec"]?["terminationGracePeriodSeconds"] = .number(30)
        }
        #expect(Self.violations(shortGrace).count == 1)
        let wrongQueue = edited("ScaledObject", "deckhand-runtime-worker") { object in
            var triggers = object["spec"]?["triggers"]?.arrayValue ?? []
            triggers[0]["metadata"]?["queueName"] = .string("runtime.command")
            object["spec"]?["triggers"] = .array(triggers)
        }
        #expect(
            Self.violations(wrongQueue) == [
                "ScaledObject/deckhand-runtime-worker scales on queue runtime.command, which Topology does not declare"
            ]
        )
        // A namespaced deployment's queues are Topology's names under that namespace.
        #expect(!Self.violations(production, topology: Topology(namespace: "staging")).isEmpty)
    }

    /// The schemas fail on what they guard: a misspelt field of a Deployment (Kubernetes' strict schema) and of a
    /// ScaledObject (KEDA's), a RabbitMQ trigger without its queue, a CPU trigger without its value or metric type,
    /// and a trigger of a type render.py does not know.
    @Test func theSchemasRejectMisspeltFields() async throws {
        let deployment = """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: broken}
            spec:
              selector: {matchLabels: {app: broken}}
              template:
                metadata: {labels: {app: broken}}
                spec:
                  containers:
                    - name: broken
                      image: deckhand/deckhand
                      readinesProbe: {httpGet: {path: /health, port: 3000}}
            ---
            apiVersion: keda.sh/v1alpha1
            kind: ScaledObject
            metadata: {name: broken}
            spec:
              scaleTargetRef: {name: broken}
              minReplicas: 1
              triggers:
                - type: rabbitmq
                  metadata: {queueNam: conversation.commands, value: "16"}
                - type: cpu
                  metadata: {target: "70"}
                - type: kafka
                  metadata: {topic: steps}
            """
        let complaint = try #require(
            try await Self.render(["broken"], yaml: deployment).failure(),
            "render.py refused the broken objects"
        ).message
        #expect(
            complaint.contains("Deployment/broken (Kubernetes 1.30.0)")
                && complaint.contains("'readinesProbe' was unexpected")
        )
        #expect(complaint.contains("ScaledObject/broken: spec: Additional properties are not allowed ('minReplicas'"))
        #expect(complaint.contains("rabbitmq trigger: unknown parameters ['queueNam']"))
        #expect(complaint.contains("rabbitmq trigger: missing parameters ['queueName']"))
        #expect(complaint.contains("cpu trigger: unknown parameters ['target']"))
        #expect(complaint.contains("cpu trigger: missing parameters ['value']"))
        #expect(complaint.contains("cpu trigger: metricType None is not one of ['AverageValue', 'Utilization']"))
        #expect(complaint.contains("trigger type 'kafka' is not one render.py knows"))
    }
}

extension Result {
    /// The error, if this is one.
    fileprivate func failure() -> Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}

import DeckhandCore
import Testing

@Suite struct ConfigurationTests {
    /// Every key is set by its environment variable, also in sections whose name holds an underscore
    /// (`DECKHAND_RUNTIME_API_PORT` is `runtime_api.port`).
    @Test func everyKeyIsSetByItsEnvironmentVariable() throws {
        for key in DeckhandConfiguration.knownKeys {
            let reader = try ConfigurationReader(environment: [ConfigurationReader.environmentVariable(for: key): "x"])
            #expect(reader.raw(key) == "x", "\(key)")
        }
        let reader = try ConfigurationReader(environment: ["DECKHAND_RUNTIME_API_PORT": "4000"])
        #expect(try RuntimeAPISettings(reader: reader).port == 4000)
    }

    /// Modal's token comes from `modal.*`, `DECKHAND_MODAL_*` or, below both, Modal's own `MODAL_*` variables.
    @Test func modalsSettingsTakeModalsOwnVariablesLast() throws {
        let modal = try ModalSettings(
            reader: ConfigurationReader(
                fileContents: "modal.environment = staging",
                environment: [
                    "MODAL_TOKEN_ID": "ak-env", "MODAL_TOKEN_SECRET": "as-env", "MODAL_ENVIRONMENT": "ignored",
                    "DECKHAND_MODAL_CPU": "0.5",
                ]
            )
        )
        #expect(modal.isConfigured)
        #expect(modal.tokenID == "ak-env" && modal.tokenSecret == "as-env")
        #expect(modal.environment == "staging", "the file wins over MODAL_ENVIRONMENT")
        #expect(modal.cpu == 0.5)
        let overridden = try ModalSettings(
            reader: ConfigurationReader(environment: [
                "MODAL_TOKEN_ID": "ak-env", "DECKHAND_MODAL_TOKEN_ID": "ak-mine",
                "MODAL_TOKEN_SECRET": "as-1",
            ])
        )
        #expect(overridden.tokenID == "ak-mine")
        #expect(!(try ModalSettings(reader: ConfigurationReader())).isConfigured)
        let noSecret = #expect(throws: DeckhandError.self) {
            try ModalSettings(reader: ConfigurationReader(environment: ["MODAL_TOKEN_ID": "ak-1"]))
        }
        #expect(noSecret?.message.contains("modal.token_secret") == true)
        #expect(noSecret?.message.contains("ak-1") == false)
        for (key, value) in [("modal.cpu", "lots"), ("modal.timeout", "48h"), ("modal.server_url", "api.modal.com")] {
            let variable = ConfigurationReader.environmentVariable(for: key)
            let error = #expect(throws: DeckhandError.self) {
                try ModalSettings(reader: ConfigurationReader(environment: [variable: value]))
            }
            #expect(error?.message.hasPrefix(key) == true, "\(key): \(String(describing: error))")
        }
    }

    @Test func defaultsAreCompleteWithoutAFile() throws {
        let config = try DeckhandConfiguration(reader: ConfigurationReader())
        #expect(config.amqp.url == AMQPURL(host: "127.0.0.1", port: 5672, user: "guest", password: "guest", vhost: "/"))
        #expect(config.postgres.poolSize == 8)
        #expect(config.docker.socket == nil)
        #expect(config.log.level == "info")
    }

    @Test func environmentOverridesTheFile() throws {
        let file = """
            # comment
            amqp.prefetch = 10   # trailing comment
            amqp.publish_timeout = "2s"
            postgres.pool_size = 3
            """
        let reader = try ConfigurationReader(
            fileContents: file,
            environment: [
                "DECKHAND_AMQP_PREFETCH": "64", "DECKHAND_DOCKER_SOCKET": "/run/docker.sock", "HOME": "/root",
            ]
        )
        let config = try DeckhandConfiguration(reader: reader)
        #expect(config.amqp.prefetch == 64)
        #expect(config.amqp.publishTimeout == .seconds(2))
        #expect(config.postgres.poolSize == 3)
        #expect(config.docker.socket == "/run/docker.sock")
    }

    @Test func aBadValueNamesTheKeyAndWhatWasExpected() throws {
        let reader = try ConfigurationReader(environment: ["DECKHAND_AMQP_HEARTBEAT": "soon"])
        let error = #expect(throws: DeckhandError.self) { try DeckhandConfiguration(reader: reader) }
        #expect(error?.code == .invalidConfiguration)
        #expect(error?.message.contains("amqp.heartbeat") == true)
        #expect(error?.message.contains("DECKHAND_AMQP_HEARTBEAT") == true)
        #expect(error?.message.contains("duration") == true)
    }

    @Test func postgresSessionLimitsAreDurationsAndZeroTurnsThemOff() throws {
        let defaults = try DeckhandConfiguration(reader: ConfigurationReader()).postgres
        #expect(defaults.keepalivesIdle == .seconds(30) && defaults.statementTimeout == .seconds(60))
        let reader = try ConfigurationReader(
            fileContents: "postgres.keepalives_idle = 0s\npostgres.statement_timeout = 250ms\n",
            environment: ["DECKHAND_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT": "0"]
        )
        let postgres = try DeckhandConfiguration(reader: reader).postgres
        #expect(postgres.keepalivesIdle == nil)
        #expect(postgres.statementTimeout == .milliseconds(250))
        #expect(postgres.idleInTransactionTimeout == nil)
        // Keepalives count whole seconds: less than one is refused, naming the key.
        let tooShort = try ConfigurationReader(environment: ["DECKHAND_POSTGRES_KEEPALIVES_IDLE": "500ms"])
        let error = #expect(throws: DeckhandError.self) { try DeckhandConfiguration(reader: tooShort) }
        #expect(error?.message.contains("postgres.keepalives_idle") == true, "\(error?.message ?? "")")
    }

    @Test func aMisspeltFileKeyIsRefused() throws {
        let reader = try ConfigurationReader(fileContents: "amqp.prefetchh = 3\n")
        let error = #expect(throws: DeckhandError.self) { try DeckhandConfiguration(reader: reader) }
        #expect(error?.message.hasPrefix("amqp.prefetchh: unknown configuration key") == true)
    }

    @Test func aBadURLNeverEchoesItsPassword() throws {
        let reader = try ConfigurationReader(environment: ["DECKHAND_AMQP_URL": "amqp://u:s3cret@host:notaport/"])
        let error = #expect(throws: DeckhandError.self) { try DeckhandConfiguration(reader: reader) }
        #expect(error?.message.contains("amqp.url") == true)
        #expect(error?.message.contains("s3cret") == false)
    }

    @Test func aLineWithoutEqualsIsAnError() {
        #expect(throws: DeckhandError.self) { try ConfigurationReader(fileContents: "amqp.url\n") }
    }

    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("10s", .seconds(10)), ("1.5s", .milliseconds(1500)),
        ("2m", .seconds(120)), ("1h", .seconds(3600)), ("7", .seconds(7)),
    ])
    func durationsParse(text: String, expected: Duration) {
        #expect(ConfigurationReader.parseDuration(text) == expected)
    }

    @Test(arguments: ["", "s", "-1s", "abc", "1x"])
    func badDurationsDoNotParse(text: String) {
        #expect(ConfigurationReader.parseDuration(text) == nil)
    }

    @Test func amqpURLsParse() {
        #expect(
            AMQPURL("amqp://a:b@h:1234/v%2Fx") == AMQPURL(host: "h", port: 1234, user: "a", password: "b", vhost: "v/x")
        )
        #expect(AMQPURL("amqp://h") == AMQPURL(host: "h", port: 5672, user: "guest", password: "guest", vhost: "/"))
        #expect(
            AMQPURL("amqp://u:p%40ss@h/") == AMQPURL(host: "h", port: 5672, user: "u", password: "p@ss", vhost: "/")
        )
        #expect(AMQPURL("http://h") == nil)
        #expect(AMQPURL("amqp://h:0") == nil)
        #expect(AMQPURL("amqp://:5672") == nil)
        #expect(AMQPURL("amqp://u:secret@h:1/").map(\.redacted) == "amqp://u:***@h:1/")
        // Several brokers of one cluster: tried in turn, same credentials and vhost.
        let cluster = AMQPURL("amqp://u:p@a:5673,b,c:5674/v")
        #expect(
            cluster
                == AMQPURL(
                    endpoints: [.init(host: "a", port: 5673), .init(host: "b"), .init(host: "c", port: 5674)],
                    user: "u",
                    password: "p",
                    vhost: "v"
                )
        )
        #expect(cluster?.host == "a" && cluster?.port == 5673)
        #expect(cluster?.redacted == "amqp://u:***@a:5673,b:5672,c:5674/v")
        #expect(AMQPURL("amqp://u:p@a,,b/") == nil, "an empty address")
        #expect(AMQPURL("amqp://u:p@a,b:99999/") == nil, "a bad port")
    }
}

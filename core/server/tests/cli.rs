//! The `crm` binary, run as an operator would: user management against a SQLite file, the
//! configuration printout, the help, `crm serve` creating the first admin, answering a sign-in
//! over HTTP and shutting down on SIGTERM, and `crm serve` killed with a command still queued on
//! its in-process bus, which the next start delivers. Argon2 is made cheap through the
//! environment.

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const CRM: &str = env!("CARGO_BIN_EXE_crm");

/// A directory of its own for one test, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("crm-cli-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.0.join("crm.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `crm` in `dir` (so no stray `crm.toml` is read), with none of the caller's `CRM_*` settings,
/// a SQLite database in `dir`, JSON logs and cheap Argon2.
fn crm(dir: &TempDir) -> Command {
    let mut command = Command::new(CRM);
    command.current_dir(&dir.0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CRM_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command
        .env("CRM_DATABASE_URL", dir.database_url())
        .env("CRM_LOG_FORMAT", "json")
        .env("CRM_AUTH_ARGON2_MEMORY_KIB", "64")
        .env("CRM_AUTH_ARGON2_ITERATIONS", "1");
    command
}

/// Runs `command` to completion, writing `stdin` (if any) to it.
fn run(command: &mut Command, stdin: Option<&str>) -> Output {
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start crm");
    if let Some(input) = stdin {
        // A command refused before it reads its input (a bad argument) closes the pipe first.
        match child.stdin.take().expect("stdin").write_all(input.as_bytes()) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {err}"),
            _ => {}
        }
    }
    child.wait_with_output().expect("crm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Expects success; returns standard output.
fn succeeds(output: &Output) -> String {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "crm failed with {}\nstdout: {stdout}\nstderr: {stderr}", output.status);
    stdout
}

/// Expects failure; returns standard error.
fn fails(output: &Output) -> String {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(!output.status.success(), "crm should have failed\nstdout: {stdout}\nstderr: {stderr}");
    stderr
}

/// The `crm user list` line of `email`, split into its columns.
fn listed(dir: &TempDir, email: &str) -> Option<Vec<String>> {
    let stdout = succeeds(&run(crm(dir).args(["user", "list"]), None));
    stdout
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .find(|columns| columns.get(1).is_some_and(|e| e == email))
}

#[test]
fn help_lists_the_commands() {
    let dir = TempDir::new("help");
    let stdout = succeeds(&run(crm(&dir).arg("--help"), None));
    let commands: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  ")).filter_map(|l| l.split_whitespace().next()).collect();
    for command in ["serve", "migrate", "config", "user"] {
        assert!(commands.contains(&command), "`{command}` missing from crm --help:\n{stdout}");
    }
    let stdout = succeeds(&run(crm(&dir).args(["user", "--help"]), None));
    for command in ["create", "list", "set-role", "disable", "enable", "reset-password"] {
        assert!(stdout.contains(command), "`{command}` missing from crm user --help:\n{stdout}");
    }
}

#[test]
fn config_never_prints_the_database_password() {
    let dir = TempDir::new("config");
    let output = run(
        crm(&dir)
            .env("CRM_DATABASE_URL", "postgres://u:secret@127.0.0.1/db")
            .env("CRM_ADMIN_EMAIL", "owner@example.gr")
            .env("CRM_ADMIN_PASSWORD", "the first admin's passphrase")
            .arg("config"),
        None,
    );
    let stdout = succeeds(&output);
    let everything = format!("{stdout}{}", text(&output.stderr));
    assert!(!everything.contains("secret"), "{everything}");
    assert!(!everything.contains("passphrase"), "{everything}");
    assert!(stdout.contains("database_url = \"postgres://u:***@127.0.0.1/db\""), "{stdout}");
    assert!(stdout.contains("admin_password = \"***\""), "{stdout}");
    assert!(stdout.contains("admin_email = \"owner@example.gr\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_commands_manage_users() {
    let dir = TempDir::new("users");
    let email = "maria@example.gr";
    let password = "bell tower at dawn 1923";

    // Create, with the password on standard input (never echoed, never logged).
    let output = run(
        crm(&dir).args(["user", "create", "--email", email, "--name", "Μαρία Παπαδοπούλου", "--role", "admin", "--password-stdin"]),
        Some(&format!("{password}\n")),
    );
    let stdout = succeeds(&output);
    assert!(stdout.contains(&format!("created admin {email}")), "{stdout}");
    assert!(!format!("{stdout}{}", text(&output.stderr)).contains(password));
    let columns = listed(&dir, email).expect("the new user is listed");
    assert!(uuid_like(&columns[0]), "{columns:?}");
    assert_eq!(columns[1..], [email, "admin", "active", "Μαρία Παπαδοπούλου"]);

    // Refusals, each with a clear message and a failing exit status.
    let stderr = fails(&run(
        crm(&dir).args(["user", "create", "--email", "x@example.gr", "--name", "X", "--role", "wizard", "--password-stdin"]),
        Some("a long enough password\n"),
    ));
    assert!(stderr.contains("wizard") && stderr.contains("admin, manager or agent"), "{stderr}");
    let stderr = fails(&run(crm(&dir).args(["user", "set-role", email, "overlord"]), None));
    assert!(stderr.contains("overlord") && stderr.contains("admin, manager or agent"), "{stderr}");
    let stderr = fails(&run(
        crm(&dir).args(["user", "create", "--email", "weak@example.gr", "--name", "W", "--role", "agent", "--password-stdin"]),
        Some("short\n"),
    ));
    assert!(stderr.contains("password must have at least 12 characters"), "{stderr}");
    assert!(listed(&dir, "weak@example.gr").is_none(), "a user with a refused password was created");
    let stderr = fails(&run(
        crm(&dir).args(["user", "create", "--email", "MARIA@example.gr", "--name", "Twin", "--role", "agent", "--password-stdin"]),
        Some("another long password\n"),
    ));
    assert!(stderr.contains("already exists"), "{stderr}");
    let stderr = fails(&run(crm(&dir).args(["user", "disable", "nobody@example.gr"]), None));
    assert!(stderr.contains("no user with e-mail nobody@example.gr"), "{stderr}");

    // Role, then disable (the e-mail is matched case-insensitively).
    let stdout = succeeds(&run(crm(&dir).args(["user", "set-role", "Maria@Example.gr", "manager"]), None));
    assert!(stdout.contains("is now manager"), "{stdout}");
    assert_eq!(listed(&dir, email).unwrap()[2], "manager");
    succeeds(&run(crm(&dir).args(["user", "disable", email]), None));
    assert_eq!(listed(&dir, email).unwrap()[3], "disabled");

    // A reset without standard input generates a password and prints it exactly once.
    let output = run(crm(&dir).args(["user", "reset-password", email]), None);
    let stdout = succeeds(&output);
    let generated: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("generated password (shown once): ")).collect();
    assert_eq!(generated.len(), 1, "{stdout}");
    let generated = generated[0].trim().to_owned();
    assert_eq!(generated.chars().count(), 20, "{generated}");
    assert!(generated.chars().all(|c| c.is_ascii_alphanumeric()), "{generated}");
    assert_eq!(stdout.matches(&generated).count(), 1, "{stdout}");
    assert!(!text(&output.stderr).contains(&generated), "the generated password was logged");

    // Enabled again, the user signs in to the server with the generated password, as a manager.
    succeeds(&run(crm(&dir).args(["user", "enable", email]), None));
    let server = Server::start(&dir, &[]).await;
    let client = reqwest::Client::new();
    let old = client.post(server.url("/api/v1/auth/login")).json(&json!({"email": email, "password": password})).send().await.unwrap();
    assert_eq!(old.status(), reqwest::StatusCode::UNAUTHORIZED);
    let me = server.sign_in(&client, email, &generated).await;
    assert_eq!(me["user"]["role"], "manager", "{me:#}");
    server.stop().await;
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_the_first_admin() {
    let dir = TempDir::new("serve");
    let (email, password) = ("owner@example.gr", "first admin passphrase 77");
    let server = Server::start(&dir, &[("CRM_ADMIN_EMAIL", email), ("CRM_ADMIN_PASSWORD", password)]).await;
    let client = reqwest::Client::new();
    let me = server.sign_in(&client, email, password).await;
    assert_eq!((&me["user"]["email"], &me["user"]["role"]), (&json!(email), &json!("admin")), "{me:#}");
    let log = server.log();
    assert!(log.contains("created the first admin"), "{log}");
    assert!(!log.contains(password), "the admin password was logged:\n{log}");
    drop(client);
    let log = server.stop().await;
    assert!(log.contains("\"stopped\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_still_stores_the_upload_it_accepted() {
    let dir = TempDir::new("journal");
    let (email, password) = ("owner@example.gr", "first admin passphrase 77");
    let admin = [("CRM_ADMIN_EMAIL", email), ("CRM_ADMIN_PASSWORD", password)];
    // No files connector at first: the command to store the upload waits in its queue on the
    // in-process bus, after the outbox relay has published it (and marked it sent).
    let server = Server::start(&dir, &[admin[0], admin[1], ("CRM_EMBEDDED_CONNECTORS", "[]")]).await;
    let client = reqwest::Client::new();
    let token = server.token(&client, email, password).await;
    let response = client
        .post(server.url("/api/v1/customers"))
        .bearer_auth(&token)
        .json(&json!({"name": "Ιερός Ναός Αγίου Νικολάου Βόλου"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let customer: Value = response.json().await.unwrap();
    let bytes: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
    let boundary = "crm-cli-journal-test";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"customer_id\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"καμπάνα.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        customer["id"].as_str().unwrap()
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = client
        .post(server.url("/api/v1/media"))
        .bearer_auth(&token)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED, "{}", server.log());
    let media: Value = response.json().await.unwrap();
    let content = format!("/api/v1/media/{}/content", media["id"].as_str().unwrap());

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bus: Value = client.get(server.url("/api/v1/bus")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        let parked = bus["queues"].as_array().into_iter().flatten().find(|q| q["group"] == "connector.files.commands");
        let outbox_empty = bus["outbox"]["backlog"] == json!(0);
        if parked.is_some_and(|q| q["messages"] == json!(1)) && outbox_empty {
            break;
        }
        assert!(Instant::now() < deadline, "the command never reached its queue: {bus:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server); // SIGKILL: no shutdown, nothing flushed on the way out.

    let server = Server::start(&dir, &admin).await;
    let token = server.token(&client, email, password).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client.get(server.url(&content)).bearer_auth(&token).send().await.unwrap();
        if response.status() == reqwest::StatusCode::OK {
            assert_eq!(response.bytes().await.unwrap().as_ref(), bytes.as_slice(), "the stored file is the uploaded one");
            break;
        }
        assert!(Instant::now() < deadline, "the upload was never stored after the restart:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.stop().await;
    assert!(log.contains("restored the messages queued before the restart"), "{log}");
}

/// `crm serve` on a free port, killed when dropped.
struct Server {
    child: Child,
    address: String,
    log_path: PathBuf,
}

impl Server {
    /// Starts `crm serve` over `dir`'s database with `env`, and waits (at most 60 s) until
    /// `/health` answers.
    async fn start(dir: &TempDir, env: &[(&str, &str)]) -> Server {
        // A port that was free a moment ago; nothing else in this test binds ports.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().unwrap().port();
        let log_path = dir.0.join(format!("serve-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = crm(dir);
        command.env("CRM_LISTEN_ADDR", format!("127.0.0.1:{port}")).envs(env.iter().copied()).arg("serve");
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().expect("start crm serve");
        let mut server = Server { child, address: format!("http://127.0.0.1:{port}"), log_path };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = server.child.try_wait().expect("wait") {
                panic!("crm serve exited with {status} before answering:\n{}", server.log());
            }
            if let Ok(response) = client.get(server.url("/health")).send().await
                && response.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "crm serve did not answer /health within 60 s:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Signs in over HTTP and returns the access token.
    async fn token(&self, client: &reqwest::Client, email: &str, password: &str) -> String {
        let response =
            client.post(self.url("/api/v1/auth/login")).json(&json!({"email": email, "password": password})).send().await.unwrap();
        let status = response.status();
        let tokens: Value = response.json().await.unwrap();
        assert_eq!(status, reqwest::StatusCode::OK, "{tokens:#}\n{}", self.log());
        assert_eq!(tokens["token_type"], "Bearer");
        tokens["access_token"].as_str().expect("access token").to_owned()
    }

    /// Signs in over HTTP and returns `/me` as that user.
    async fn sign_in(&self, client: &reqwest::Client, email: &str, password: &str) -> Value {
        let token = self.token(client, email, password).await;
        let response = client.get(self.url("/api/v1/me")).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Asks the server to stop (SIGTERM where there is `kill`), expects a clean exit within 20 s,
    /// and returns its log, every line of which must be JSON.
    async fn stop(mut self) -> String {
        let asked = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().is_ok_and(|s| s.success());
        if !asked {
            self.child.kill().expect("kill crm serve");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let status: ExitStatus = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "crm serve did not stop within 20 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = self.log();
        if asked {
            assert!(status.success(), "crm serve exited with {status} on SIGTERM:\n{log}");
        }
        for line in log.lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("CRM_LOG_FORMAT=json, but a line is not JSON ({e}): {line}"));
        }
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

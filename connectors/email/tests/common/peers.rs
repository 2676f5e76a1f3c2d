//! Real mail servers for the tests, on loopback: a private Dovecot (IMAP with IDLE, LMTP) and an
//! aiosmtpd SMTP server that relays what it accepts over LMTP into that Dovecot. Both are
//! installed when missing (`apt-get install dovecot-imapd dovecot-lmtpd`; a venv with aiosmtpd
//! under `target/`), started in a temporary directory on free ports, and stopped when dropped.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The password of every test user.
pub(crate) const PASSWORD: &str = "secret";
/// The users of every Dovecot.
pub(crate) const USERS: [&str; 3] = ["alice@example.test", "bob@example.test", "carol@example.test"];

static INSTALL: Mutex<bool> = Mutex::new(false);

fn run(command: &mut Command) -> std::process::Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn have(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A private test CA and a server certificate for `localhost` signed by it, made with openssl
/// in `dir`: (CA certificate, server certificate, server key), PEM files.
pub(crate) fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let status =
            Command::new("openssl").args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()).status().expect("openssl runs");
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=crm-hub test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

/// Installs Dovecot when missing (once per test binary).
fn ensure_dovecot() {
    let mut done = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if *done || (have("dovecot") && have("doveadm") && Path::new("/usr/lib/dovecot/lmtp").exists()) {
        *done = true;
        return;
    }
    eprintln!("installing dovecot-imapd and dovecot-lmtpd (apt-get)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "dovecot-imapd", "dovecot-lmtpd"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        assert!(install(), "apt-get install dovecot-imapd dovecot-lmtpd failed");
    }
    *done = true;
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private Dovecot.
#[derive(Debug)]
pub(crate) struct Dovecot {
    dir: tempfile::TempDir,
    pub(crate) imap_port: u16,
    pub(crate) lmtp_port: u16,
    /// IMAPS (implicit TLS), when started with a certificate.
    pub(crate) imaps_port: Option<u16>,
}

impl Dovecot {
    /// Starts one with the users [`USERS`].
    pub(crate) fn start() -> Dovecot {
        Dovecot::start_with(None)
    }

    /// Starts one with TLS (certificate and key PEM files): STARTTLS on the IMAP port, implicit
    /// TLS on `imaps_port`.
    pub(crate) fn start_with(tls: Option<(&Path, &Path)>) -> Dovecot {
        ensure_dovecot();
        let dir = tempfile::Builder::new().prefix("crm-dovecot-").tempdir().unwrap();
        let root = dir.path();
        // Dovecot's processes run as other users: they must be able to reach the folder.
        let _ = run(Command::new("chmod").arg("755").arg(root));
        let mail = root.join("mail");
        std::fs::create_dir_all(&mail).unwrap();
        let _ = run(Command::new("chown").args(["-R", "nobody:nogroup"]).arg(&mail));
        let users: String = USERS.iter().map(|u| format!("{u}:{{PLAIN}}{PASSWORD}\n")).collect();
        std::fs::write(root.join("users"), users).unwrap();
        let (imap_port, lmtp_port) = (free_port(), free_port());
        let imaps_port = tls.map(|_| free_port());
        let ssl = match tls {
            Some((cert, key)) => format!("ssl = yes\nssl_cert = <{}\nssl_key = <{}\n", cert.display(), key.display()),
            None => "ssl = no\n".to_owned(),
        };
        let imaps = imaps_port.map_or("0".to_owned(), |p| format!("{p}\n    address = 127.0.0.1"));
        let r = root.display();
        let config = format!(
            "protocols = imap lmtp\n\
             listen = 127.0.0.1\n\
             {ssl}\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             base_dir = {r}/run\n\
             state_dir = {r}/state\n\
             log_path = {r}/dovecot.log\n\
             info_log_path = {r}/dovecot.log\n\
             mail_location = maildir:~/Maildir\n\
             mail_uid = nobody\n\
             mail_gid = nogroup\n\
             first_valid_uid = 1\n\
             first_valid_gid = 1\n\
             mail_fsync = never\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/users\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={r}/mail/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n  inet_listener imaps {{\n    port = {imaps}\n  }}\n}}\n\
             service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp_port}\n  }}\n}}\n\
             protocol lmtp {{\n  postmaster_address = postmaster@example.test\n}}\n\
             namespace inbox {{\n  inbox = yes\n  mailbox Sent {{\n    special_use = \\Sent\n    auto = create\n  }}\n}}\n"
        );
        std::fs::write(root.join("dovecot.conf"), config).unwrap();
        let dovecot = Dovecot { dir, imap_port, lmtp_port, imaps_port };
        dovecot.start_server();
        dovecot
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    /// The log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    fn start_server(&self) {
        // The daemon keeps the descriptors it was given: never a pipe we would wait on.
        let out = self.dir.path().join("dovecot.start");
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join("dovecot.start.err")).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "dovecot did not start: {}\n{}",
            std::fs::read_to_string(self.dir.path().join("dovecot.start.err")).unwrap_or_default(),
            self.log()
        );
        wait_for_port(self.imap_port, "dovecot imap", &self.dir.path().join("dovecot.log"));
        wait_for_port(self.lmtp_port, "dovecot lmtp", &self.dir.path().join("dovecot.log"));
    }

    /// Stops the server (the mail stays).
    pub(crate) fn stop(&self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(self.conf())
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.imap_port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Stops and starts the server on the same ports.
    pub(crate) fn restart(&self) {
        self.stop();
        self.start_server();
    }

    /// `doveadm ... ARGS`; panics on failure.
    pub(crate) fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        self.try_doveadm(args, stdin).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
        let mut child = Command::new("doveadm")
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            return Err(format!(
                "doveadm {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Puts a message into `folder` of `user` (`doveadm save`), retrying while the server
    /// restarts.
    pub(crate) fn save(&self, user: &str, folder: &str, raw: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_doveadm(&["save", "-u", user, "-m", folder], Some(raw)) {
                Ok(_) => return,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("{err}"),
            }
        }
    }

    /// Delivers `messages` to `user`'s INBOX over LMTP, one connection, one transaction each
    /// (fast: for the benchmark and long streams).
    pub(crate) fn deliver_lmtp(&self, user: &str, messages: &[Vec<u8>]) {
        use std::io::BufRead as _;
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.lmtp_port)).unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = std::io::BufWriter::new(stream);
        let reply = |reader: &mut std::io::BufReader<std::net::TcpStream>, want: &str| loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(want), "LMTP: expected {want}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        };
        reply(&mut reader, "220");
        writer.write_all(b"LHLO bench.example\r\n").unwrap();
        writer.flush().unwrap();
        reply(&mut reader, "250");
        for raw in messages {
            writer.write_all(format!("MAIL FROM:<sender@example.gr>\r\nRCPT TO:<{user}>\r\nDATA\r\n").as_bytes()).unwrap();
            writer.flush().unwrap();
            reply(&mut reader, "250");
            reply(&mut reader, "250");
            reply(&mut reader, "354");
            let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
            for line in text.lines() {
                if line.starts_with('.') {
                    writer.write_all(b".").unwrap();
                }
                writer.write_all(line.as_bytes()).unwrap();
                writer.write_all(b"\r\n").unwrap();
            }
            writer.write_all(b".\r\n").unwrap();
            writer.flush().unwrap();
            reply(&mut reader, "250");
        }
        writer.write_all(b"QUIT\r\n").unwrap();
        writer.flush().unwrap();
    }

    /// The raw messages in `folder` of `user`, in UID order.
    pub(crate) fn fetch_all(&self, user: &str, folder: &str) -> Vec<String> {
        let uids = self.doveadm(&["search", "-u", user, "mailbox", folder, "ALL"], None);
        uids.lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .map(|uid| self.doveadm(&["fetch", "-u", user, "text", "mailbox", folder, "uid", uid], None))
            .map(|text| text.strip_prefix("text:\n").map(str::to_owned).unwrap_or(text))
            .collect()
    }

    /// The UIDVALIDITY of `folder`.
    pub(crate) fn uid_validity(&self, user: &str, folder: &str) -> u32 {
        let out = self.doveadm(&["mailbox", "status", "-u", user, "uidvalidity", folder], None);
        out.split("uidvalidity=").nth(1).unwrap_or("").trim().parse().unwrap_or_else(|_| panic!("uidvalidity from {out:?}"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm").arg("-c").arg(self.conf()).arg("stop").stderr(Stdio::null()).status();
    }
}

/// The venv with aiosmtpd (made once, under `target/`).
fn aiosmtpd_python() -> PathBuf {
    static VENV: Mutex<()> = Mutex::new(());
    let _guard = VENV.lock().unwrap_or_else(|p| p.into_inner());
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/email-test-venv"));
    let python = venv.join("bin/python");
    let ready = || Command::new(&python).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ready() {
        eprintln!("creating {} with aiosmtpd (pip)", venv.display());
        let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(venv.join("bin/pip")).args(["install", "-q", "aiosmtpd>=1.4,<2"]).status().unwrap();
        assert!(status.success() && ready(), "pip install aiosmtpd failed");
    }
    python
}

const SMTP_SERVER: &str = r#"
import asyncio, os, smtplib, sys, time, uuid
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, lmtp_port, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
user, password = os.environ.get("SMTP_USER"), os.environ.get("SMTP_PASSWORD")

class Relay:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if local.startswith("later"):
            return "451 4.3.0 <%s>: Temporary failure, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        name = os.path.join(store, "%d-%s.eml" % (time.time_ns(), uuid.uuid4().hex))
        with open(name + ".tmp", "wb") as f:
            f.write(data)
        os.rename(name + ".tmp", name)
        try:
            with smtplib.LMTP("127.0.0.1", lmtp_port) as lmtp:
                lmtp.sendmail(envelope.mail_from, envelope.rcpt_tos, data)
        except Exception as e:
            return "451 4.3.0 relay failed: %s" % e
        return "250 2.0.0 Ok: queued as %s" % os.path.basename(name)

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, handled=False)

kwargs = {}
if user:
    kwargs = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
mode = os.environ.get("SMTP_TLS")
if mode:
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ["SMTP_CERT"], os.environ["SMTP_KEY"])
    if mode == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    else:
        kwargs.update(ssl_context=context)
controller = Controller(Relay(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// An aiosmtpd server relaying into a Dovecot over LMTP, keeping a copy of every message.
/// Recipients whose local part starts with `reject` get a 550, with `later` a 451.
#[derive(Debug)]
pub(crate) struct Smtp {
    child: Child,
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

impl Smtp {
    /// Starts one relaying to `dovecot`; with AUTH when `auth` is given.
    pub(crate) fn start(dovecot: &Dovecot, auth: Option<(&str, &str)>) -> Smtp {
        Smtp::start_on(free_port(), dovecot, auth)
    }

    /// The same on a given port.
    pub(crate) fn start_on(port: u16, dovecot: &Dovecot, auth: Option<(&str, &str)>) -> Smtp {
        Smtp::start_tls(port, dovecot, auth, None)
    }

    /// The same with TLS: `("starttls" | "implicit", certificate, key)`.
    pub(crate) fn start_tls(port: u16, dovecot: &Dovecot, auth: Option<(&str, &str)>, tls: Option<(&str, &Path, &Path)>) -> Smtp {
        let python = aiosmtpd_python();
        let dir = tempfile::Builder::new().prefix("crm-smtp-").tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), SMTP_SERVER).unwrap();
        let store = dir.path().join("messages");
        std::fs::create_dir_all(&store).unwrap();
        let log = dir.path().join("smtp.log");
        let mut command = Command::new(python);
        command
            .arg(dir.path().join("server.py"))
            .arg(port.to_string())
            .arg(dovecot.lmtp_port.to_string())
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("smtp.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((user, password)) = auth {
            command.env("SMTP_USER", user).env("SMTP_PASSWORD", password);
        }
        if let Some((mode, cert, key)) = tls {
            command.env("SMTP_TLS", mode).env("SMTP_CERT", cert).env("SMTP_KEY", key);
        }
        let child = command.spawn().unwrap();
        wait_for_port(port, "aiosmtpd", &log);
        Smtp { child, dir, port }
    }

    /// The messages it accepted, oldest first.
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("messages"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// Its log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtp.log")).unwrap_or_default()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A test fixture, never deployed: a pricing-plugin that tries to reach outside its sandbox —
//! reading a file, the environment, the clock and the network — and reports what it got in its
//! explanation lines. The host must refuse it (it imports wasi:filesystem and wasi:sockets) or
//! contain it.

wit_bindgen::generate!({ path: "../../wit/crm-rules/0.1.0", world: "pricing-plugin" });

use crm::rules::types::RuleError;
use exports::crm::rules::pricing::{Guest, Order, Quote};

struct Snoop;

impl Guest for Snoop {
    fn price(_: Order) -> Result<Quote, RuleError> {
        let file = std::fs::read_to_string("/etc/hostname").map(|s| format!("file: {s}")).unwrap_or_else(|e| format!("no file: {e}"));
        let env = format!("env: {} vars", std::env::vars().count());
        let net = match std::net::TcpStream::connect("127.0.0.1:5432") {
            Ok(_) => "net: connected".to_owned(),
            Err(e) => format!("no net: {e}"),
        };
        let now = format!("clock: {:?}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()));
        Ok(Quote { lines: vec![], subtotal: 0, discount: 0, tax: 0, total: 0, explanation: vec![file, env, net, now] })
    }
}

export!(Snoop);

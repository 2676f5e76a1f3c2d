//! Customer get and search over HTTP, on 100,000 realistic customers, per backend.
//!
//! `cargo bench -p crm-tests --bench search`
//!
//! For each backend (SQLite always; PostgreSQL when a server answers, see `crm_tests::TestDb`)
//! the bench loads the customers through the store, starts the API on a loopback port and
//! times, from one client and one request at a time, `GET /api/v1/customers/{id}` and
//! `GET /api/v1/customers?search=...` with a realistic mix of queries: names as people type
//! them (lower case, no accents), "first last" pairs, e-mail fragments, whole phone numbers in
//! the international forms and fragments of phone digits.
//!
//! Names come from the mimesis person vocabularies (Greek mostly, some English, German and
//! Russian), organisations are Greek parishes, every customer has a Greek mobile written in
//! one of the usual ways and an e-mail address. Generation is deterministic (fixed seed).
//!
//! `CRM_BENCH_CUSTOMERS` changes the number of customers (for trying the bench out quickly).
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use crm_domain::contact::{ContactInput, ContactType, Region};
use crm_domain::customer::{CustomerInput, CustomerStatus, Location};
use crm_domain::fold_for_search;
use crm_tests::{Backend, TestApp, TestDb};
use hdrhistogram::Histogram;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

const CUSTOMERS: usize = 100_000;
const SAMPLES: usize = 2_000;
const WARM_UP: usize = 200;
const LOADERS: usize = 8;
const SEED: u64 = 0x5EED_C0FF_EE15_B311;
const TARGET_P99_MS: f64 = 20.0;

fn fixture(locale: &str, file: &str) -> Value {
    let path = format!("{}/../../shared/fixtures/contacts/mimesis/{locale}/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// xorshift64* seeded through splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0; the bias is negligible for the sizes used here).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

/// First names and surnames of one locale, by gender.
struct Names {
    language: &'static str,
    first: [Vec<String>; 2],
    last: [Vec<String>; 2],
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// A list that is either split by gender (`{"female": [...], "male": [...]}`) or shared.
fn by_gender(value: &Value) -> [Vec<String>; 2] {
    match value {
        Value::Object(map) => [strings(&map["female"]), strings(&map["male"])],
        shared => [strings(shared), strings(shared)],
    }
}

impl Names {
    fn load(locale: &'static str) -> Names {
        let person = fixture(locale, "person.json");
        let names = Names { language: locale, first: by_gender(&person["names"]), last: by_gender(&person["surnames"]) };
        assert!(names.first.iter().chain(&names.last).all(|l| !l.is_empty()), "{locale}: empty name list");
        names
    }
}

/// Greek parishes are named after their saint or feast (genitive).
const DEDICATIONS: &[&str] = &[
    "Αγίου Νικολάου",
    "Αγίου Γεωργίου",
    "Αγίου Δημητρίου",
    "Αγίας Παρασκευής",
    "Αγίας Τριάδος",
    "Κοιμήσεως της Θεοτόκου",
    "Ευαγγελισμού της Θεοτόκου",
    "Αγίου Αθανασίου",
    "Αγίων Αποστόλων",
    "Αγίου Ιωάννου του Προδρόμου",
    "Μεταμορφώσεως του Σωτήρος",
    "Αγίου Σπυρίδωνος",
    "Αγίας Μαρίνας",
    "Αγίου Παντελεήμονος",
    "Αγίας Ειρήνης",
    "Αγίων Κωνσταντίνου και Ελένης",
    "Αγίου Χαραλάμπους",
    "Αγίας Αικατερίνης",
    "Αγίου Στεφάνου",
    "Ζωοδόχου Πηγής",
    "Αγίου Βασιλείου",
    "Αγίου Ελευθερίου",
    "Αγίας Σοφίας",
    "Παναγίας Φανερωμένης",
    "Τιμίου Σταυρού",
    "Αγίων Αναργύρων",
];
const PARISH_FORMS: &[&str] = &["Ιερός Ναός {d} {c}", "Ι.Ν. {d}, {c}", "Ενορία {d} ({c})", "Ιερός Ναός {d}"];
const EMAIL_DOMAINS: &[&str] =
    &["gmail.com", "yahoo.gr", "hotmail.com", "otenet.gr", "outlook.com", "windowslive.com", "in.gr", "yahoo.com", "mail.ru", "web.de"];
const TAGS: &[&str] =
    &["bells", "clock", "controller", "vip", "installer", "newsletter", "service-contract", "μητρόπολη", "καμπαναριό", "εγγύηση"];
const STATUSES: &[CustomerStatus] = &[CustomerStatus::Lead, CustomerStatus::Prospect, CustomerStatus::Active, CustomerStatus::Inactive];

/// One generated customer, with what the queries are made of.
struct Person {
    greek: bool,
    first: String,
    last: String,
    /// The name as stored (a priest's has "π." in front).
    name: String,
    organization: Option<String>,
    /// The mobile's ten national digits, 69xxxxxxxx.
    mobile: String,
    /// The mobile as typed.
    mobile_typed: String,
    landline: Option<String>,
    email: String,
    language: &'static str,
    tags: Vec<String>,
    city: String,
    region: String,
    status: CustomerStatus,
    contacted: bool,
}

/// Lower-case Latin letters for an e-mail address: Greek and Cyrillic transliterated.
fn latin(text: &str) -> String {
    let mut out = String::new();
    for c in fold_for_search(text).replace("ου", "ou").chars() {
        let s = match c {
            'a'..='z' | '0'..='9' => {
                out.push(c);
                continue;
            }
            'α' => "a",
            'β' | 'в' => "v",
            'γ' | 'г' => "g",
            'δ' | 'д' => "d",
            'ε' | 'е' | 'ё' | 'э' => "e",
            'ζ' | 'з' => "z",
            'η' | 'ι' | 'и' => "i",
            'θ' => "th",
            'κ' | 'к' => "k",
            'λ' | 'л' => "l",
            'μ' | 'м' => "m",
            'ν' | 'н' => "n",
            'ξ' => "x",
            'ο' | 'ω' | 'о' => "o",
            'π' | 'п' => "p",
            'ρ' | 'р' => "r",
            'σ' | 'ς' | 'с' => "s",
            'τ' | 'т' => "t",
            'υ' => "y",
            'φ' | 'ф' => "f",
            'χ' => "ch",
            'ψ' => "ps",
            'а' => "a",
            'б' => "b",
            'ж' => "zh",
            'й' | 'ы' => "y",
            'у' => "u",
            'х' => "kh",
            'ц' => "ts",
            'ч' => "ch",
            'ш' => "sh",
            'щ' => "shch",
            'ю' => "yu",
            'я' => "ya",
            'ß' => "ss",
            _ => "",
        };
        out.push_str(s);
    }
    out
}

/// `69x xxx xxxx` style groupings of ten national digits.
fn grouped(national: &str, sep: &str) -> String {
    format!("{}{sep}{}{sep}{}", &national[..3], &national[3..6], &national[6..])
}

struct Generator {
    locales: Vec<Names>,
    cities: Vec<String>,
    regions: Vec<String>,
}

impl Generator {
    fn load() -> Generator {
        let address = fixture("el", "address.json");
        Generator {
            locales: ["el", "en", "de", "ru"].into_iter().map(Names::load).collect(),
            cities: strings(&address["city"]),
            regions: strings(&address["state"]["name"]),
        }
    }

    fn person(&self, rng: &mut Rng) -> Person {
        // Mostly Greek customers, some abroad.
        let locale = match rng.below(100) {
            0..80 => 0,
            80..87 => 1,
            87..94 => 2,
            _ => 3,
        };
        let names = &self.locales[locale];
        let gender = rng.below(2);
        let first = rng.pick(&names.first[gender]).clone();
        let last = rng.pick(&names.last[gender]).clone();
        let greek = locale == 0;
        let priest = greek && gender == 1 && rng.chance(15);
        let name = if priest { format!("π. {first} {last}") } else { format!("{first} {last}") };
        let city = rng.pick(&self.cities).clone();
        let organization = rng.chance(85).then(|| {
            let dedication = *rng.pick(DEDICATIONS);
            rng.pick(PARISH_FORMS).replace("{d}", dedication).replace("{c}", &city)
        });
        let mobile = format!("69{}", rng.digits(8));
        let mobile_typed = match rng.below(7) {
            0 => grouped(&mobile, " "),
            1 => mobile.clone(),
            2 => format!("+30 {}", grouped(&mobile, " ")),
            3 => format!("+30{mobile}"),
            4 => format!("0030 {mobile}"),
            5 => grouped(&mobile, "-"),
            _ => format!("(+30) {}", grouped(&mobile, ".")),
        };
        let landline = rng
            .chance(20)
            .then(|| if rng.chance(60) { format!("210 {} {}", rng.digits(3), rng.digits(4)) } else { format!("2310 {}", rng.digits(6)) });
        let nonempty = |s: String| if s.is_empty() { "x".to_owned() } else { s };
        let (f, l) = (nonempty(latin(&first)), nonempty(latin(&last)));
        let local = match rng.below(4) {
            0 => format!("{f}.{l}"),
            1 => format!("{f}{l}{}", rng.below(100)),
            2 => format!("{}{l}", &f[..1]),
            _ => format!("{l}.{f}{}", 50 + rng.below(56)),
        };
        let email = format!("{local}@{}", rng.pick(EMAIL_DOMAINS));
        let mut tags = Vec::new();
        for _ in 0..rng.below(4) {
            let tag = rng.pick(TAGS).to_string();
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Person {
            greek,
            first,
            last,
            name,
            organization,
            mobile,
            mobile_typed,
            landline,
            email,
            language: names.language,
            tags,
            city,
            region: rng.pick(&self.regions).clone(),
            status: *rng.pick(STATUSES),
            contacted: rng.chance(50),
        }
    }
}

impl Person {
    fn input(&self) -> CustomerInput {
        let contact = |kind, label: Option<&str>, value: &str, primary| ContactInput {
            kind,
            label: label.map(str::to_owned),
            value: value.to_owned(),
            primary,
        };
        let mut contacts = vec![
            contact(ContactType::Phone, Some("κινητό"), &self.mobile_typed, true),
            contact(ContactType::Email, None, &self.email, true),
        ];
        if let Some(landline) = &self.landline {
            contacts.push(contact(ContactType::Phone, Some("ναός"), landline, false));
        }
        CustomerInput {
            name: Some(self.name.clone()),
            organization: self.organization.clone(),
            contacts,
            location: Some(Location { city: Some(self.city.clone()), country: Some("GR".into()), region: Some(self.region.clone()) }),
            language: Some(self.language.into()),
            tags: self.tags.clone(),
            status: Some(self.status),
            contacted: Some(self.contacted),
            ..CustomerInput::default()
        }
    }
}

/// Loads `people` through `store.create` from several tasks; returns the ids in order.
async fn load(db: &TestDb, people: Arc<Vec<Person>>) -> Vec<Uuid> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..LOADERS)
        .map(|_| {
            let (store, people, next) = (db.store.clone(), people.clone(), next.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(person) = people.get(i) else { break };
                    let customer = person
                        .input()
                        .parse(Region::GR, chrono::Utc::now())
                        .unwrap_or_else(|e| panic!("customer {i} ({}) is invalid: {e:?}", person.name));
                    let record = store.create(customer).await.unwrap_or_else(|e| panic!("create customer {i}: {e}"));
                    ids.push((i, record.id));
                }
                ids
            })
        })
        .collect();
    let mut ids = vec![Uuid::nil(); people.len()];
    for task in tasks {
        for (i, id) in task.await.expect("loader task") {
            ids[i] = id;
        }
    }
    ids
}

/// Lower case without accents, as people type: final sigma stays ς.
fn typed(text: &str) -> String {
    let folded = fold_for_search(text);
    let mut out = String::with_capacity(folded.len());
    let mut chars = folded.chars().peekable();
    while let Some(c) = chars.next() {
        let at_end = chars.peek().is_none_or(|n| !n.is_alphabetic());
        out.push(if c == 'σ' && at_end { 'ς' } else { c });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Surname,
    FirstName,
    FullName,
    Email,
    PhonePlus30,
    Phone0030,
    PhoneDigits,
}

impl Kind {
    const ALL: [Kind; 7] =
        [Kind::Surname, Kind::FirstName, Kind::FullName, Kind::Email, Kind::PhonePlus30, Kind::Phone0030, Kind::PhoneDigits];

    fn label(self) -> &'static str {
        match self {
            Kind::Surname => "greek surname",
            Kind::FirstName => "greek first name",
            Kind::FullName => "first last",
            Kind::Email => "e-mail fragment",
            Kind::PhonePlus30 => "+30 69x xxx xxxx",
            Kind::Phone0030 => "0030 69x...",
            Kind::PhoneDigits => "4-6 phone digits",
        }
    }

    /// The query mix, in percent.
    fn draw(rng: &mut Rng) -> Kind {
        match rng.below(100) {
            0..20 => Kind::Surname,
            20..30 => Kind::FirstName,
            30..50 => Kind::FullName,
            50..65 => Kind::Email,
            65..77 => Kind::PhonePlus30,
            77..85 => Kind::Phone0030,
            _ => Kind::PhoneDigits,
        }
    }
}

/// A query of `kind` made from a customer in the data.
fn query(kind: Kind, people: &[Person], rng: &mut Rng) -> String {
    let person = loop {
        let p = rng.pick(people);
        if p.greek || !matches!(kind, Kind::Surname | Kind::FirstName) {
            break p;
        }
    };
    match kind {
        Kind::Surname => typed(&person.last),
        Kind::FirstName => typed(&person.first),
        Kind::FullName => typed(&format!("{} {}", person.first, person.last)),
        Kind::Email => {
            let local = person.email.split('@').next().unwrap_or_default();
            if rng.chance(50) || local.len() <= 6 {
                local.to_owned()
            } else {
                let len = 6 + rng.below(local.len() - 5).min(4);
                let start = rng.below(local.len() - len + 1);
                local[start..start + len].to_owned()
            }
        }
        Kind::PhonePlus30 => format!("+30 {}", grouped(&person.mobile, " ")),
        Kind::Phone0030 => format!("0030 {}", person.mobile),
        Kind::PhoneDigits => {
            let len = 4 + rng.below(3);
            let start = 2 + rng.below(person.mobile.len() - len - 1);
            person.mobile[start..start + len].to_owned()
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Latencies of one operation, in microseconds.
struct Measured {
    name: String,
    latencies: Histogram<u64>,
    elapsed: Duration,
    results: usize,
    empty: usize,
}

impl Measured {
    fn new(name: impl Into<String>) -> Measured {
        Measured { name: name.into(), latencies: histogram(), elapsed: Duration::ZERO, results: 0, empty: 0 }
    }

    fn record(&mut self, took: Duration, results: usize) {
        self.latencies.record(took.as_micros().max(1) as u64).expect("latency in range");
        self.elapsed += took;
        self.results += results;
        self.empty += usize::from(results == 0);
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// GET `url` and the number of records in the answer (1 for a record, the page size for a
/// listing). Only the request and the body transfer are timed.
async fn timed_get(app: &TestApp, url: &str) -> (Duration, usize) {
    let start = Instant::now();
    let response = app.client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let took = start.elapsed();
    assert!(status.is_success(), "GET {url}: {status} {}", String::from_utf8_lossy(&body));
    let doc: Value = serde_json::from_slice(&body).expect("JSON body");
    let results = doc.get("items").and_then(Value::as_array).map_or(1, Vec::len);
    (took, results)
}

fn search_url(app: &TestApp, q: &str) -> String {
    app.url(&format!("/api/v1/customers?search={}", urlencode(q)))
}

/// `application/x-www-form-urlencoded` for one value.
fn urlencode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The 1-minute load average (Linux), to tell whether something else competed for the CPU.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"))
}

struct Report {
    backend: &'static str,
    load: Duration,
    /// Load averages when the measurements started and ended.
    cpu_load: (Option<f64>, Option<f64>),
    customers: usize,
    rows: Vec<Measured>,
    by_kind: Vec<(Kind, Measured)>,
}

async fn run(backend: Backend, label: &'static str, people: Arc<Vec<Person>>, generator_seed: u64) -> Option<Report> {
    let Some(db) = TestDb::new(backend).await else {
        println!("\n== {label}: SKIPPED (no PostgreSQL server answers at 127.0.0.1:5432; set CRM_TEST_POSTGRES_URL to point elsewhere)");
        return None;
    };
    println!("\n== {label}: loading {} customers ({LOADERS} concurrent tasks through Store::create)...", people.len());
    let start = Instant::now();
    let ids = load(&db, people.clone()).await;
    let load = start.elapsed();
    println!("   loaded in {:.1} s ({:.0} customers/s)", load.as_secs_f64(), people.len() as f64 / load.as_secs_f64());
    if backend == Backend::Postgres {
        // What autovacuum would have done a minute after a bulk load.
        db.store.execute_raw("ANALYZE").await.expect("analyze");
    }

    let app = TestApp::spawn(db).await;
    let mut rng = Rng::new(generator_seed);
    let get_url = |rng: &mut Rng| app.url(&format!("/api/v1/customers/{}", rng.pick(&ids)));

    for _ in 0..WARM_UP {
        timed_get(&app, &get_url(&mut rng)).await;
        let kind = Kind::draw(&mut rng);
        timed_get(&app, &search_url(&app, &query(kind, &people, &mut rng))).await;
    }

    let load_before = load_average();
    let mut get = Measured::new("get by id");
    let wall = Instant::now();
    for _ in 0..SAMPLES {
        let (took, n) = timed_get(&app, &get_url(&mut rng)).await;
        get.record(took, n);
    }
    get.elapsed = wall.elapsed();

    let mut search = Measured::new("search (mix)");
    let mut by_kind: Vec<(Kind, Measured)> = Kind::ALL.iter().map(|k| (*k, Measured::new(k.label()))).collect();
    let wall = Instant::now();
    for _ in 0..SAMPLES {
        let kind = Kind::draw(&mut rng);
        let q = query(kind, &people, &mut rng);
        let (took, n) = timed_get(&app, &search_url(&app, &q)).await;
        search.record(took, n);
        if let Some((_, m)) = by_kind.iter_mut().find(|(k, _)| *k == kind) {
            m.record(took, n);
        }
    }
    search.elapsed = wall.elapsed();
    Some(Report {
        backend: label,
        load,
        cpu_load: (load_before, load_average()),
        customers: people.len(),
        rows: vec![get, search],
        by_kind,
    })
}

fn print_table(reports: &[Report]) {
    println!("\nLatency over HTTP, sequential, one client (ms; req/s = count / wall time):\n");
    println!(
        "{:<11} {:<18} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "backend", "operation", "count", "p50", "p90", "p99", "max", "req/s", "avg results"
    );
    for report in reports {
        for m in &report.rows {
            let avg = m.results as f64 / m.latencies.len().max(1) as f64;
            println!(
                "{:<11} {:<18} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.0} {:>12.1}",
                report.backend,
                m.name,
                m.latencies.len(),
                m.ms(0.5),
                m.ms(0.9),
                m.ms(0.99),
                m.latencies.max() as f64 / 1000.0,
                m.latencies.len() as f64 / m.elapsed.as_secs_f64(),
                avg
            );
        }
    }
    println!("\nSearch by kind of query (ms; results are per page, at most 20; \"none\" = queries that found nothing):\n");
    println!(
        "{:<11} {:<18} {:>6} {:>8} {:>8} {:>8} {:>8} {:>12} {:>6}",
        "backend", "query", "count", "p50", "p90", "p99", "max", "avg results", "none"
    );
    for report in reports {
        for (_, m) in &report.by_kind {
            let n = m.latencies.len().max(1);
            println!(
                "{:<11} {:<18} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>12.1} {:>6}",
                report.backend,
                m.name,
                m.latencies.len(),
                m.ms(0.5),
                m.ms(0.9),
                m.ms(0.99),
                m.latencies.max() as f64 / 1000.0,
                m.results as f64 / n as f64,
                m.empty
            );
        }
    }
    println!();
    for report in reports {
        println!(
            "{:<11} loaded {} customers in {:.1} s ({:.0}/s); load average {} when the measurements started, {} when they ended",
            report.backend,
            report.customers,
            report.load.as_secs_f64(),
            report.customers as f64 / report.load.as_secs_f64(),
            show(report.cpu_load.0),
            show(report.cpu_load.1)
        );
    }
    println!();
    for report in reports {
        let p99 = report.rows[1].ms(0.99);
        let verdict = if p99 < TARGET_P99_MS { "met" } else { "MISSED" };
        println!("{:<11} target search p99 < {TARGET_P99_MS:.0} ms: {verdict} (p99 {p99:.2} ms)", report.backend);
    }
}

fn main() {
    let customers = std::env::var("CRM_BENCH_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(CUSTOMERS);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("crm-hub customer search benchmark");
    println!("machine: {cores} cores (nproc), release build; target: search p99 < {TARGET_P99_MS:.0} ms");
    println!("data: {customers} customers, seed {SEED:#x}; {SAMPLES} requests per operation after {WARM_UP} warm-up rounds");

    let generator = Generator::load();
    let mut rng = Rng::new(SEED);
    let people: Arc<Vec<Person>> = Arc::new((0..customers).map(|_| generator.person(&mut rng)).collect());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let reports: Vec<Report> = runtime.block_on(async {
        let mut reports = Vec::new();
        for (backend, label) in [(Backend::Sqlite, "sqlite"), (Backend::Postgres, "postgres")] {
            reports.extend(run(backend, label, people.clone(), SEED ^ 0xA5A5).await);
        }
        reports
    });
    print_table(&reports);
}

//! Prints per-call latency and calls per second of matching and pricing through the plugin
//! host, beside the same rules called natively, and the cold-load time of a plugin from its
//! cached artifact. Not a test: `cargo bench -p crm-plugins --bench plugins`. Figures are in
//! docs/benchmarks.md.

#![allow(clippy::print_stdout)]

use crm_domain::contact::Region;
use crm_domain::money::{Hundredths, Money};
use crm_domain::order::{Discount, ItemType};
use crm_plugins::matching::{Channel, Sender};
use crm_plugins::pricing::{PriceLine, PriceRequest, price_natively};
use crm_plugins::{HostConfig, PluginHost, defaults};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn measure(label: &str, iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let per_call = started.elapsed() / iterations;
    println!("{label:<44} {:>10.2} µs/call {:>12.0} calls/s", per_call.as_secs_f64() * 1e6, 1.0 / per_call.as_secs_f64());
    per_call
}

fn main() {
    let cache = tempfile::tempdir().expect("temp dir");
    let config = HostConfig { cache_dir: Some(cache.path().to_owned()), ..HostConfig::default() };
    let host = PluginHost::new(config.clone()).expect("host");
    let pricing = host.load("crm-pricing", "bench", defaults::PRICING_WASM).expect("pricing");
    let matcher = host.load("crm-matcher", "bench", defaults::MATCHER_WASM).expect("matcher");

    let line = |q, p, d: Option<Discount>| PriceLine {
        kind: ItemType::Product,
        product_id: Some("0190a0b2-7c3e-7000-8000-000000000001".into()),
        quantity: q,
        unit_price: Money::from_minor(p),
        discount: d,
        tax_rate: None,
    };
    let request = PriceRequest {
        currency: "EUR".into(),
        customer_id: Some("0190a0b2-7c3e-7000-8000-000000000002".into()),
        lines: vec![
            line(2, 85_000, None),
            line(4, 1_250, Some(Discount::Percentage { value: Hundredths::from_hundredths(500), reason: None })),
            line(1, 15_000, None),
        ],
        discount: Some(Discount::Percentage { value: Hundredths::from_hundredths(1_000), reason: None }),
        tax_rate: Some(Hundredths::from_hundredths(2_400)),
    };
    let sender =
        Sender {
            channel: Channel::Whatsapp, address: "306941234567@s.whatsapp.net".into(), display_name: Some("Στέλιος Μπίμπης".into())
        };
    let email = Sender { channel: Channel::Email, address: "Stelios@Example.GR".into(), display_name: None };
    assert_eq!(pricing.price(&request).expect("price"), price_natively(&request).expect("native"));

    println!("per call (3-line order with discounts and tax; WhatsApp sender with a name; e-mail sender)");
    measure("price, native (crm_domain::order::quote)", 200_000, || {
        black_box(price_natively(black_box(&request)).ok());
    });
    measure("price, through the host (WASM plugin)", 100_000, || {
        black_box(pricing.price(black_box(&request)).ok());
    });
    measure("match_keys whatsapp, native", 100_000, || {
        black_box(crm_domain::matching::match_keys(black_box(&sender), Region::GR));
    });
    measure("match_keys whatsapp, through the host", 50_000, || {
        black_box(matcher.match_keys(black_box(&sender)).ok());
    });
    measure("match_keys e-mail, native", 200_000, || {
        black_box(crm_domain::matching::match_keys(black_box(&email), Region::GR));
    });
    measure("match_keys e-mail, through the host", 100_000, || {
        black_box(matcher.match_keys(black_box(&email)).ok());
    });

    println!("cold load from the cached artifact (a new host, as after a restart; 101 loads each)");
    let cold = HostConfig { warm_up: false, ..config.clone() };
    for (label, config, name, bytes) in [
        ("crm-pricing (artifact, link, instantiate)", &config, "crm-pricing", defaults::PRICING_WASM),
        ("crm-matcher (artifact, link, instantiate, warm-up)", &config, "crm-matcher", defaults::MATCHER_WASM),
        ("crm-matcher without its warm-up", &cold, "crm-matcher", defaults::MATCHER_WASM),
    ] {
        let mut times: Vec<Duration> = (0..101)
            .map(|_| {
                let host = PluginHost::new(config.clone()).expect("host");
                let started = Instant::now();
                let plugin = host.load(name, "bench", bytes).expect("load");
                let took = started.elapsed();
                assert_eq!(host.cache_stats().map(|s| s.hits), Some(1), "{name} was not loaded from its cached artifact");
                drop(plugin);
                took
            })
            .collect();
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("load {label:<52} median {:>6.3} ms  (fastest {:.3}, 90th percentile {:.3})", ms(times[50]), ms(times[0]), ms(times[90]));
    }
    println!("compiling instead (no cache)");
    let uncached = PluginHost::new(HostConfig { cache_dir: None, ..HostConfig::default() }).expect("host");
    let started = Instant::now();
    uncached.load("crm-pricing", "bench", defaults::PRICING_WASM).expect("load");
    println!("{:<44} {:>10.3} ms", "load crm-pricing, compiling with Cranelift", started.elapsed().as_secs_f64() * 1e3);
}

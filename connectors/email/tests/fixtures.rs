//! Every shared email fixture parses, with the decoded values a person reads in them: senders
//! with display names, subjects and bodies in Cyrillic, Hebrew, German and Swedish (RFC 2047
//! encoded words in UTF-8, windows-1251, ISO-8859-1, ISO-8859-8-i), attachments, threading
//! headers; bounces and read receipts become reports on the original Message-ID. Also checks
//! mail-parser's own header test vectors shipped with the fixtures through our address
//! conversion.

mod common;

use common::fixtures;
use crm_bus::message::{Address, DeliveryState, DeliveryStatus, MessageReceived};
use crm_connector_email::parse::{Inbound, ParseOptions, parse};

fn parsed(name: &str) -> Inbound {
    let (_, raw) = fixtures().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no fixture {name}"));
    parse(&raw, &ParseOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn message(name: &str) -> MessageReceived {
    match parsed(name) {
        Inbound::Message(m) => *m,
        other => panic!("{name} is not a message: {other:?}"),
    }
}

fn report(name: &str) -> DeliveryStatus {
    match parsed(name) {
        Inbound::Reports(mut reports) if reports.len() == 1 => reports.remove(0),
        other => panic!("{name} is not one report: {other:?}"),
    }
}

fn email(value: &str, name: Option<&str>) -> Address {
    Address::email(value, name.map(str::to_owned))
}

#[test]
fn every_fixture_parses() {
    for (name, raw) in fixtures() {
        let inbound = parse(&raw, &ParseOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Inbound::Message(m) = inbound {
            assert!(!m.from.value.is_empty(), "{name}");
            assert!(m.channel_message_id.starts_with('<') && m.channel_message_id.ends_with('>'), "{name}");
        }
    }
}

#[test]
fn cyrillic_subject_and_quoted_printable_body() {
    let m = message("flanker/bilingual-simple.eml");
    assert_eq!(m.channel_message_id, "<341090.85574.qm@web50704.mail.re2.yahoo.com>");
    assert_eq!(m.from, email("hello@example.com", Some("Hello")));
    assert_eq!(m.to, vec![email("bob@example.com", None)]);
    assert_eq!(m.subject.as_deref(), Some("Simple text. How are you? Как ты поживаешь?"));
    assert_eq!(m.body, "This line is in English\nА эта линия по-русски.");
    assert_eq!(m.occurred_at.to_rfc3339(), "2010-02-07T22:02:38+00:00");
    assert!(!m.auto_reply);
}

#[test]
fn windows_1251_encoded_words_across_lines() {
    let m = message("php-mime-mail-parser/m0021");
    assert_eq!(m.subject.as_deref(), Some("occurs when divided into an array, and the last e of the array! Путін хуйло!!!!!!"));
    assert_eq!(m.from, email("mail@exemple.com", None));
    assert_eq!(m.to.iter().map(|a| a.value.as_str()).collect::<Vec<_>>(), ["mail@exemple.com", "mail2@exemple3.com", "mail3@exemple2.com"]);
    assert_eq!(m.body, "mini plain body");
}

#[test]
fn utf8_base64_display_name_without_message_id_or_date() {
    let m = message("php-mime-mail-parser/m0124");
    assert_eq!(m.from, email("user@domain.ru", Some("ФГУП \"СибНИА им.С.А.Чаплыгина\"\"")));
    assert_eq!(m.subject.as_deref(), Some("1234 / 1234"));
    assert!(m.channel_message_id.starts_with("<synthetic."), "{}", m.channel_message_id);
    assert_eq!(m.channel_message_id, message("php-mime-mail-parser/m0124").channel_message_id, "stable");
}

#[test]
fn iso_8859_1_names_subject_and_body() {
    let m = message("stalwart-mail-parser/003.eml");
    assert_eq!(m.from, email("dwsauder@example.com", Some("Doug Sauder")));
    assert_eq!(m.to, vec![email("mueller@example.com", Some("Heinz Müller"))]);
    assert_eq!(m.subject.as_deref(), Some("Die Hasen und die Frösche"));
    assert!(m.body.starts_with("Die Hasen und die Frösche\n\nDie Hasen klagten einst über ihre mißliche Lage;"), "{}", m.body);
    assert!(m.body.contains("Unsere stete Angst ist ärger als der Tod selbst."), "{}", m.body);
}

#[test]
fn hebrew_subject_and_an_attachment_after_an_mbox_line() {
    let m = message("php-mime-mail-parser/issue149");
    assert_eq!(m.subject.as_deref(), Some("מענה 'אני לא נמצא': Invoice 02722027"));
    assert_eq!(m.from, email("name@company.com", Some("Name")));
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(m.attachments[0].filename, "attach01");
    assert_eq!(m.attachments[0].mime_type, "application/octet-stream");
    assert_eq!(m.attachments[0].size, 2);
    assert_eq!(m.attachments[0].content.as_ref().unwrap().0, b"a\n");
}

#[test]
fn encoded_word_display_name_and_references() {
    let m = message("php-mime-mail-parser/m0019");
    assert_eq!(m.from, email("sender@test.com", Some("sendeär")));
    assert_eq!(m.to, vec![email("test@asdasd.com", Some("test"))]);
    assert_eq!(m.subject.as_deref(), Some("Re: Maya Ethnobotanicals - Emails"));
    assert_eq!(m.references, vec!["<CAEMnOreG=99=qx-ONib=g+32uBdSav5WP303BA@mail.gmail.com>".to_owned()]);
    assert!(m.body.starts_with("This email will not be captured correctly by php-mime-mail-parser."), "{}", m.body);
}

#[test]
fn unicode_attachment_names_and_the_text_body() {
    let m = message("nodemailer-mailparser/nodemailer.eml");
    assert_eq!(m.from, email("andris@kreata.ee", Some("Andris Kreata")));
    assert_eq!(m.to, vec![email("andris+123@kreata.ee", Some("Andris Reinman")), email("andris.reinman@gmail.com", None)]);
    assert_eq!(m.subject.as_deref(), Some("Nodemailer is unicode friendly ✔ (1476358788189)"));
    assert_eq!(m.body, "Hello to myself!");
    let names: Vec<(&str, &str, u64)> = m.attachments.iter().map(|a| (a.filename.as_str(), a.mime_type.as_str(), a.size)).collect();
    assert_eq!(names, [("image.png", "image/png", 126), ("nyan cat ✔.gif", "image/gif", 29361), ("notes.txt", "text/plain", 28)]);
    assert_eq!(m.attachments[2].content.as_ref().unwrap().0, b"Some notes about this e-mail");
    assert!(m.attachments[1].content.as_ref().unwrap().0.starts_with(b"GIF89a"));
}

#[test]
fn pdf_attachment_and_a_message_without_sender() {
    let m = message("flanker/attached-pdf.eml");
    assert_eq!(m.subject.as_deref(), Some("test message via curl - extra content-type (_001_)"));
    assert_eq!(m.body, "Test - body content");
    assert_eq!(m.from.value, crm_connector_email::parse::UNKNOWN_SENDER, "lands unmatched, for triage");
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(m.attachments[0].filename, "test.pdf");
    assert_eq!(m.attachments[0].mime_type, "application/pdf");
    assert_eq!(m.attachments[0].size, 6940);
    assert!(m.attachments[0].content.as_ref().unwrap().0.starts_with(b"%PDF-1.3"));
    let capped = parse(
        &fixtures().into_iter().find(|(n, _)| n == "flanker/attached-pdf.eml").unwrap().1,
        &ParseOptions { attachment_cap: 1000, received_at: None },
    )
    .unwrap();
    let Inbound::Message(capped) = capped else { panic!() };
    assert_eq!(capped.attachments[0].size, 6940);
    assert!(capped.attachments[0].content.is_none());
    assert!(capped.attachments[0].refused.as_deref().unwrap().contains("cap of 1000 bytes"));
}

#[test]
fn threading_headers_and_plain_text_over_html() {
    let m = message("flanker/multi-received-headers.eml");
    assert_eq!(m.in_reply_to.as_deref(), Some("<AANLkTinUdYK2NpEiYCKGnCEp_OXKqst_bWNdBVHsfDVh@mail.gmail.com>"));
    assert_eq!(
        m.references,
        [
            "<AANLkTi=1ANR2FzeeQ-vK3-_ty0gUrOsAxMRYkob6CL-c@mail.gmail.com>",
            "<AANLkTinUdYK2NpEiYCKGnCEp_OXKqst_bWNdBVHsfDVh@mail.gmail.com>"
        ]
    );
    assert!(m.body.starts_with("---------- Forwarded message ----------\nFrom: Hello <hello@example.com>"), "{}", m.body);
    let qp = message("flanker/quoted-printable.eml");
    assert!(qp.body.contains("http://translate.google.com/translate?sl=de&tl=en&u=http%3A%2F%2Fwww.horizont.at%2Fhome%2Fdetail%2Fgoogle-ist-geldgeber-von-adblock-plus.html&act=url"), "{}", qp.body);
    let text = message("flanker/text-only.eml");
    assert_eq!(text.body, "Hello,\nI'm just testing message parsing\n\nBR,\nBob");
    assert_eq!(text.from, email("bob@marley.com", Some("Bob Marley")));
}

#[test]
fn bounces_are_failures_of_the_original_message() {
    let aol = report("flanker/mailbox-full.eml");
    assert_eq!(aol.status, DeliveryState::Failed);
    assert_eq!(aol.channel_message_id.as_deref(), Some("<4E326A95.3010907@example.com>"));
    assert_eq!(aol.reason.as_deref(), Some("user@aol.com: 5.2.2 (552 5.2.2 E4.12 user MAILBOX FULL)"));
    assert_eq!(aol.entry_id, None, "not one of ours");

    let office = report("flanker/office365.eml");
    assert_eq!(office.status, DeliveryState::Failed);
    assert_eq!(office.channel_message_id.as_deref(), Some("<20171013111011.20866.254C2F3A4D7AA526@ninomail.com>"));
    assert!(office.reason.as_deref().unwrap().starts_with("noname@example.com: 5.1.10 (550 5.1.10 RESOLVER.ADR.RecipientNotFound"));

    let ses = report("nodemailer-mailparser/delivery-status.eml");
    assert_eq!(ses.channel_message_id.as_deref(), Some("<xxxxx@email.amazonses.com>"));
    assert!(ses.reason.as_deref().unwrap().starts_with("xxxx@xxxx.com: 5.1.1 (Amazon SES did not send the message"));

    // Not RFC 3464: Gmail's plain-text bounce with the original headers inline.
    let gmail = report("flanker/gmail-invalid-address.eml");
    assert_eq!(gmail.status, DeliveryState::Failed);
    assert_eq!(gmail.channel_message_id.as_deref(), Some("<CAKsfaBUUGqVZiaMrmH3TRPfq1odQPtM7Ey5YW1SgyJJRHtAjgw@mail.gmail.com>"));
    assert_eq!(
        gmail.reason.as_deref(),
        Some("awfawfawfawfawfaw@someserverhere.com: 550 5.1.0 Recipient rejected: <awfawfawfawfawfaw@someserverhere.com>")
    );
}

#[test]
fn a_read_receipt_marks_the_original_read() {
    let mdn = report("flanker/disposition-notification.eml");
    assert_eq!(mdn.status, DeliveryState::Read);
    assert_eq!(mdn.channel_message_id.as_deref(), Some("<199509192301.23456@example.org>"));
}

/// mail-parser's header vectors (shipped beside the fixtures): the addresses we publish are
/// theirs, names and all.
#[test]
fn address_vectors_convert_to_bus_addresses() {
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/stalwart-mail-parser/address.json", common::FIXTURES)).unwrap()).unwrap();
    let mut checked = 0;
    for vector in vectors.as_array().unwrap() {
        let header = vector["header"].as_str().unwrap();
        let Some(list) = vector["expected"]["List"].as_array() else { continue };
        let expected: Vec<(String, Option<String>)> = list
            .iter()
            .filter_map(|a| Some((a["address"].as_str()?.trim().to_owned(), a["name"].as_str().map(|n| n.trim().to_owned()))))
            .filter(|(a, _)| !a.is_empty())
            .collect();
        if expected.is_empty() {
            continue;
        }
        let raw = format!("From: a@b.example\r\nTo:{}{}\r\n\r\nx\r\n", if header.starts_with(' ') { "" } else { " " }, header.trim_end());
        let Inbound::Message(m) = parse(raw.as_bytes(), &ParseOptions::default()).unwrap() else { panic!() };
        let got: Vec<(String, Option<String>)> = m.to.iter().map(|a| (a.value.clone(), a.name.clone())).collect();
        let expected: Vec<(String, Option<String>)> = expected
            .into_iter()
            .map(|(a, n)| {
                let n = n.filter(|n| !n.is_empty() && *n != a);
                (a, n)
            })
            .collect();
        assert_eq!(got, expected, "{header:?}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} vectors checked");
}

use super::*;

fn p(s: &str) -> Result<Signature, Skip> {
    parse_rule(s, &Vars::suricata_defaults())
}

#[test]
fn parses_a_full_et_style_rule() {
    let s = p(r#"alert http $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"ET TEST \"q\" x"; flow:established,to_server; http.method; content:"GET"; http.uri; content:"/a|3b|b"; fast_pattern; content:"c"; distance:0; within:10; pcre:"/x=\d+/Ui"; reference:url,x.y; classtype:trojan-activity; sid:2000001; rev:3; metadata:a b, c d;)"#).unwrap();
    assert_eq!((s.sid, s.rev, s.priority), (2000001, 3, 1));
    assert_eq!(s.msg, "ET TEST \"q\" x");
    assert_eq!(
        s.flow,
        FlowCond {
            to_server: Some(true),
            established: Some(true)
        }
    );
    assert_eq!(s.buffers.len(), 2);
    assert_eq!(s.buffers[0].0, Buffer::HttpMethod);
    assert_eq!(s.buffers[1].0, Buffer::HttpUri);
    // content, content, pcre (U flag) in http.uri
    assert_eq!(s.buffers[1].1.len(), 3);
    assert_eq!(s.fast, Some((Buffer::HttpUri, b"/a;b".to_vec())));
    assert_eq!(s.app_proto(), Some(AppProto::Http));
}

#[test]
fn legacy_modifiers_move_the_previous_content() {
    let s = p(r#"alert tcp any any -> any 80 (content:"GET"; http_method; content:"/x"; http_uri; content:"zz"; sid:1;)"#).unwrap();
    let bufs: Vec<Buffer> = s.buffers.iter().map(|b| b.0).collect();
    assert_eq!(
        bufs,
        vec![Buffer::HttpMethod, Buffer::HttpUri, Buffer::Payload]
    );
}

#[test]
fn content_bytes_and_modifiers() {
    assert_eq!(
        parse_content_bytes("a|00 ff|b\\;").unwrap(),
        b"a\x00\xffb;".to_vec()
    );
    assert!(parse_content_bytes("|0|").is_err());
    assert!(parse_content_bytes("|zz|").is_err());
    let s = p(r#"alert udp any any -> any 53 (content:!"abc"; nocase; offset:2; depth:8; dsize:>10; sid:5;)"#).unwrap();
    let Matcher::Content(c) = &s.buffers[0].1[0] else {
        panic!()
    };
    assert!(c.negated && c.nocase && c.offset == 2 && c.depth == Some(8));
    assert_eq!(s.fast, None, "a negated content is never the fast pattern");
    assert_eq!(s.dsize, Some(Cmp::Gt(10)));
}

#[test]
fn flags_threshold_icmp() {
    let s = p("alert tcp any any -> any any (flags:S,12; sid:1;)").unwrap();
    let f = s.flags.unwrap();
    assert!(f.test(0x02) && f.test(0x02 | 0xc0) && !f.test(0x12));
    let s = p("alert tcp any any -> any any (flags:+SA; sid:1;)").unwrap();
    assert!(s.flags.unwrap().test(0x1a) && !s.flags.unwrap().test(0x02));
    let s = p("alert icmp any any -> any any (itype:8; icode:0; threshold:type both, track by_flow, count 3, seconds 60; sid:1;)").unwrap();
    assert_eq!(s.itype, Some(Cmp::Eq(8)));
    assert_eq!(s.threshold.unwrap().kind, ThresholdKind::Both);
    assert_eq!(s.threshold.unwrap().track, Track::ByFlow);
    let s = p("alert icmp any any -> any any (detection_filter:track by_src, count 2, seconds 10; sid:1;)").unwrap();
    assert_eq!(s.detection_filter.unwrap().count, 2);
    assert!(
        Cmp::parse("300<>400").unwrap().test(301) && !Cmp::parse("300<>400").unwrap().test(400)
    );
}

#[test]
fn skips_with_reasons_never_half_loads() {
    let cases = [
        (
            "alert tcp any any -> any any (xbits:set,x,track ip_src; content:\"a\"; sid:1;)",
            "unsupported keyword: xbits",
        ),
        (
            "alert smtp any any -> any any (content:\"a\"; sid:1;)",
            "unsupported protocol: smtp",
        ),
        (
            "alert tcp $NOPE any -> any any (sid:1;)",
            "undefined variable",
        ),
        (
            "alert tcp any any -> any any (content:\"a\"; pcre:\"/(a)\\1/\"; sid:1;)",
            "pcre: backreference",
        ),
        (
            "alert tcp any any -> any any (content:\"a\"; flow:only_stream; sid:1;)",
            "unsupported flow option: only_stream",
        ),
        (
            "alert tcp any any -> any any (content:\"a\")",
            "syntax: option without ';'",
        ),
        (
            "alert tcp any any -> any any (content:\"a\";)",
            "syntax: no sid",
        ),
        (
            "alert tcp any any => any any (sid:1;)",
            "syntax: bad direction",
        ),
        (
            "alert tcp any any -> any any (nocase; sid:1;)",
            "syntax: nocase without a content",
        ),
        (
            "alert tcp any any -> any any (content:\"a\"; classtype:nope; sid:1;)",
            "unknown classtype",
        ),
        (
            "alert udp any any -> any any (flags:S; sid:1;)",
            "syntax: flags on a non-TCP rule",
        ),
        (
            "alert http any any -> any any (tls.sni; content:\"a\"; sid:1;)",
            "syntax: buffers of two app protocols",
        ),
        (
            "alert tcp any any -> any any (content:\"a\"; distance:0; sid:1;)",
            "syntax: first content in Payload is relative (distance/within)",
        ),
    ];
    for (r, why) in cases {
        assert_eq!(p(r).unwrap_err().0, why, "{r}");
    }
}

#[test]
fn load_text_counts_and_continuations() {
    let text = "# comment\n\
alert tcp any any -> any any (content:\"a\"; sid:1;)\n\
alert tcp any any -> any any (content:\"b\"; \\\n sid:2;)\n\
alert tcp any any -> any any (content:\"c\"; sid:1;)\n\
alert ftp any any -> any any (sid:3;)\n\
#alert tcp any any -> any any (sid:4;)\n";
    let mut out = Vec::new();
    let mut rep = LoadReport::default();
    load_text(text, &Vars::suricata_defaults(), &mut out, &mut rep);
    assert_eq!(rep.loaded, 2);
    assert_eq!(rep.skipped.get("duplicate sid"), Some(&1));
    assert_eq!(rep.skipped.get("unsupported protocol: ftp"), Some(&1));
    assert_eq!(rep.skipped_total(), 2);
    assert!(rep.render().contains("2 loaded, 2 skipped"));
}

proptest::proptest! {
    #[test]
    fn never_panics(s in "\\PC{0,200}") {
        let _ = p(&s);
    }

    #[test]
    fn never_panics_rule_shaped(opts in proptest::collection::vec("[a-z_.]{1,12}(:[ -~]{0,20})?", 0..8)) {
        let r = format!("alert tcp any any -> any any ({} sid:1;)", opts.iter().map(|o| format!("{o};")).collect::<String>());
        let _ = p(&r);
    }
}

#[test]
fn bsize_urilen_isdataat_dotprefix() {
    let s = p(r#"alert dns any any -> any any (dns.query; dotprefix; content:".evil.com"; endswith; bsize:<40; sid:1;)"#).unwrap();
    assert!(matches!(s.buffers[0].1[0], Matcher::DotPrefix));
    assert_eq!(s.fast, Some((Buffer::DnsQuery, b".evil.com".to_vec())));
    let s = p(r#"alert http any any -> any any (urilen:>100,raw; sid:2;)"#).unwrap();
    assert_eq!(s.buffers[0].0, Buffer::HttpUri);
    assert!(
        p(r#"alert http any any -> any any (http.uri; content:"a"; dotprefix; sid:3;)"#).is_err()
    );
}

#[test]
fn modifiers_apply_to_the_last_content_past_bsize() {
    let s = p(r#"alert http any any -> any any (http.host; content:"ABC.example"; bsize:11; nocase; fast_pattern; sid:1;)"#).unwrap();
    let Matcher::Content(c) = &s.buffers[0].1[0] else {
        panic!()
    };
    assert!(c.nocase && c.fast_pattern);
}

//! `recap-dns SERVER:PORT NAME/TYPE[*COUNT]...`: sends DNS queries over UDP, one at a time (a
//! fresh id each), waits up to 500 ms for each answer and prints what came back as JSON:
//! `{"NOERROR": n, "NXDOMAIN": m, "unanswered": k}`. The ground truth of the `dns` test.

use std::{collections::BTreeMap, net::UdpSocket, time::Duration};

fn qtype(name: &str) -> u16 {
    match name {
        "A" => 1,
        "NS" => 2,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        other => other.parse().expect("a query type"),
    }
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend(0x0100u16.to_be_bytes()); // recursion desired
    q.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes()); // IN
    q
}

const RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let server = args.next().expect("SERVER:PORT");
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let mut id: u16 = 0x4200;
    for spec in args {
        let (q, count) = match spec.rsplit_once('*') {
            Some((q, n)) => (q.to_string(), n.parse().unwrap()),
            None => (spec.clone(), 1),
        };
        let (name, ty) = q.split_once('/').expect("NAME/TYPE");
        for _ in 0..count {
            id = id.wrapping_add(1);
            sock.send_to(&query(id, name, qtype(ty)), &server).unwrap();
            let mut buf = [0u8; 1500];
            let outcome = loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                        let rcode = (buf[3] & 0x0f) as usize;
                        break RCODES
                            .get(rcode)
                            .map_or(format!("RCODE{rcode}"), |r| r.to_string());
                    }
                    Ok(_) => continue,
                    Err(_) => break "unanswered".to_string(),
                }
            };
            *got.entry(outcome).or_default() += 1;
        }
    }
    let out: Vec<String> = got.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    println!("{{{}}}", out.join(", "));
}

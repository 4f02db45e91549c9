//! Many clients at once over tcp, each pipelining requests: every request is answered, with
//! the right data, in whatever order they complete. (Kept apart from the descriptor-leak test,
//! which counts this process's descriptors.)

mod client;

use client::fixture::TcpServer;
use co9p::protocol::*;
use co9p::server::Config;

#[test]
fn many_connections_with_pipelined_requests_each_get_every_reply() {
    let (fs, _) = client::fixture::test_fs();
    let server = TcpServer::start(fs, Config::default());
    {
        let mut c = server.connect();
        c.version(65536);
        c.attach(Fid(0), "").unwrap();
        for i in 0..8 {
            let f = c.walk_path(Fid(0), "").unwrap();
            c.lcreate(f, &format!("f{i}"), OpenFlags::RDWR, 0o644)
                .unwrap();
            c.write(f, 0, format!("content of file {i}").as_bytes())
                .unwrap();
            c.clunk(f).unwrap();
        }
    }
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut c = client::Client::new(client::tcp(&addr));
                c.version(65536);
                c.attach(Fid(0), "").unwrap();
                c.walk(Fid(0), Fid(1), &[&format!("f{i}")]).unwrap();
                c.lopen(Fid(1), OpenFlags::RDONLY).unwrap();
                let expected = format!("content of file {i}").into_bytes();
                // 2000 reads with up to 64 in flight: every one answered, with the right data.
                let mut in_flight = std::collections::VecDeque::new();
                for _ in 0..2000 {
                    in_flight.push_back(c.send(Tmessage::Read {
                        fid: Fid(1),
                        offset: 0,
                        count: 4096,
                    }));
                    if in_flight.len() == 64 {
                        let t = in_flight.pop_front().unwrap();
                        assert_eq!(
                            c.reply(t),
                            Some(Rmessage::Read {
                                data: Data(expected.clone())
                            })
                        );
                    }
                }
                for t in in_flight {
                    assert_eq!(
                        c.reply(t),
                        Some(Rmessage::Read {
                            data: Data(expected.clone())
                        })
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

//! The master and slaves driven directly, without a network: calls between
//! them are queued and delivered in a seeded order, some fail and are
//! retried, objects are checkpointed and restored mid-run, slaves are lost.

use std::collections::VecDeque;

use colony_core::object::{encode, ObjectUri, Outgoing};

use super::*;

/// A small deterministic generator for the delivery order.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Slave {
    uri: ObjectUri,
    seq: u64,
    object: FlowShopSlave,
}

/// A report on its way to the master: from which slave (by URI), its call.
struct Call {
    from: ObjectUri,
    id: CallId,
    request: Vec<u8>,
}

/// A reply on its way back.
struct Reply {
    to: ObjectUri,
    id: CallId,
    reply: Result<Vec<u8>, CallError>,
}

struct Local {
    master_uri: ObjectUri,
    master_seq: u64,
    master: FlowShopMaster,
    slaves: Vec<Slave>,
    calls: VecDeque<Call>,
    replies: VecDeque<Reply>,
    rng: Rng,
    next_guid: u128,
    /// One call in this many fails (0: none).
    fail_one_in: u64,
}

impl Local {
    fn new(instance: &str, slaves: usize, seed: u64) -> Local {
        let master_uri = ObjectUri::new("t", Guid(1)).unwrap();
        let mut master_seq = 0;
        let mut ctx = ObjectContext::new(&master_uri, &mut master_seq);
        let master = FlowShopMaster::create(
            &mut ctx,
            MasterParams {
                instance: instance.to_string(),
            },
        )
        .unwrap();
        let mut local = Local {
            master_uri,
            master_seq,
            master,
            slaves: Vec::new(),
            calls: VecDeque::new(),
            replies: VecDeque::new(),
            rng: Rng(seed),
            next_guid: 100,
            fail_one_in: 0,
        };
        for index in 0..slaves {
            local.add_slave(index as u32);
        }
        local
    }

    fn add_slave(&mut self, index: u32) {
        self.next_guid += 1;
        let uri = ObjectUri::new("t", Guid(self.next_guid)).unwrap();
        let mut seq = 0;
        let mut ctx = ObjectContext::new(&uri, &mut seq);
        let params = SlaveParams {
            master: Ref::new(self.master_uri.clone()),
            index,
        };
        let object = FlowShopSlave::create(&mut ctx, params).unwrap();
        self.slaves.push(Slave { uri, seq, object });
    }

    fn master(&mut self, request: MasterRequest) -> MasterReply {
        let mut ctx = ObjectContext::new(&self.master_uri, &mut self.master_seq);
        let reply = self.master.handle(&mut ctx, request).unwrap();
        assert!(ctx.take_outgoing().is_empty(), "the master calls nobody");
        reply
    }

    fn status(&mut self) -> MasterStatus {
        match self.master(MasterRequest::Status) {
            MasterReply::Status(status) => status,
            other => panic!("{other:?}"),
        }
    }

    /// One work call to slave `i`; its reports join the queue.
    fn work(&mut self, i: usize, nodes: u32) -> SlaveProgress {
        let slave = &mut self.slaves[i];
        let mut ctx = ObjectContext::new(&slave.uri, &mut slave.seq);
        let progress = slave
            .object
            .handle(&mut ctx, SlaveRequest::Work { nodes })
            .unwrap();
        for out in ctx.take_outgoing() {
            match out {
                Outgoing::Call {
                    id,
                    to,
                    object_type,
                    request,
                } => {
                    assert_eq!(to, self.master_uri);
                    assert_eq!(object_type, FlowShopMaster::TYPE);
                    self.calls.push_back(Call {
                        from: slave.uri.clone(),
                        id,
                        request,
                    });
                }
                other => panic!("a slave only calls: {other:?}"),
            }
        }
        progress
    }

    /// Delivers one queued call or reply, picked at random; whether there
    /// was one.
    fn deliver_one(&mut self) -> bool {
        let total = self.calls.len() + self.replies.len();
        if total == 0 {
            return false;
        }
        let pick = self.rng.below(total);
        if pick < self.calls.len() {
            let call = self.calls.remove(pick).unwrap();
            let fails = self.fail_one_in > 0 && self.rng.next().is_multiple_of(self.fail_one_in);
            let reply = if fails {
                Err(CallError::DeadlinePassed { after_ms: 1 })
            } else {
                let request: MasterRequest = postcard::from_bytes(&call.request).unwrap();
                Ok(encode(&self.master(request)))
            };
            self.replies.push_back(Reply {
                to: call.from,
                id: call.id,
                reply,
            });
        } else {
            let reply = self.replies.remove(pick - self.calls.len()).unwrap();
            if let Some(slave) = self.slaves.iter_mut().find(|s| s.uri == reply.to) {
                let mut ctx = ObjectContext::new(&slave.uri, &mut slave.seq);
                slave.object.on_reply(&mut ctx, reply.id, reply.reply);
                assert!(ctx.take_outgoing().is_empty());
            }
        }
        true
    }

    /// Pumps every slave round and round, delivering messages in between,
    /// until the master says the search is over; `each_round` may change
    /// things. The best schedule, checked.
    fn run(&mut self, nodes: u32, mut each_round: impl FnMut(&mut Local, u64)) -> MasterStatus {
        for round in 0..200_000u64 {
            each_round(self, round);
            for i in 0..self.slaves.len() {
                let progress = self.work(i, nodes);
                assert_eq!(progress.error, None);
                for _ in 0..self.rng.below(3) {
                    self.deliver_one();
                }
            }
            let status = self.status();
            if status.over {
                return status;
            }
        }
        panic!("the search did not end: {:?}", self.status());
    }
}

fn check_optimal(status: &MasterStatus, instance: &str) {
    let number = taillard::parse_name(instance).unwrap();
    let best = status.best.clone().unwrap();
    assert_eq!(
        best.makespan,
        taillard::BEST_KNOWN[number - 1],
        "{status:?}"
    );
    let instance = flowshop::instance(instance).unwrap();
    assert!(instance.is_permutation(&best.permutation));
    assert_eq!(instance.makespan(&best.permutation), best.makespan);
    assert!(
        status.over && status.pool == 0 && status.held == 0,
        "{status:?}"
    );
}

#[test]
fn master_and_slaves_find_the_optimum() {
    for (instance, slaves, seed) in [("ta001", 3, 1), ("ta005", 4, 2), ("ta003", 1, 3)] {
        let mut local = Local::new(instance, slaves, seed);
        let status = local.run(20, |_, _| {});
        check_optimal(&status, instance);
        assert!(status.pieces_done >= 1, "{status:?}");
        if slaves > 1 {
            assert!(
                status.pieces_split > 0,
                "{instance}: nobody split: {status:?}"
            );
        }
    }
}

#[test]
fn failed_reports_are_retried_without_effect_twice() {
    let mut local = Local::new("ta005", 3, 7);
    local.fail_one_in = 4;
    let status = local.run(15, |_, _| {});
    check_optimal(&status, "ta005");
    let retried: u64 = local
        .slaves
        .iter_mut()
        .map(|s| s.object.progress.reports_retried)
        .sum();
    assert!(retried > 0);
}

#[test]
fn a_lost_slaves_work_goes_back_to_the_pool_and_the_optimum_is_found() {
    let mut local = Local::new("ta005", 3, 11);
    let mut lost = 0;
    let status = local.run(15, |local, round| {
        // Every 8 rounds lose a slave holding a piece, with the
        // reports it still had on their way (late ones reach the master
        // after it was declared lost), and add a new one.
        if round % 8 != 7 || lost >= 4 {
            return;
        }
        let Some(i) = local.slaves.iter().position(|s| s.object.held.is_some()) else {
            return;
        };
        let gone = local.slaves.remove(i);
        lost += 1;
        let reply = local.master(MasterRequest::SlaveLost {
            slave: gone.uri.guid,
        });
        assert!(
            matches!(reply, MasterReply::SlaveLost { returned: true }),
            "{reply:?}"
        );
        local.add_slave(100 + lost);
    });
    check_optimal(&status, "ta005");
    assert_eq!(lost, 4);
    assert_eq!(status.lost_slaves, 4);
    assert!(status.pieces_returned >= 4, "{status:?}");
}

#[test]
fn master_and_slaves_survive_checkpoint_and_restore() {
    let mut local = Local::new("ta005", 3, 5);
    let status = local.run(15, |local, round| {
        if round % 10 == 5 {
            let bytes = postcard::to_stdvec(&local.master).unwrap();
            local.master = postcard::from_bytes(&bytes).unwrap();
            for slave in &mut local.slaves {
                let bytes = postcard::to_stdvec(&slave.object).unwrap();
                slave.object = postcard::from_bytes(&bytes).unwrap();
            }
        }
    });
    check_optimal(&status, "ta005");
}

#[test]
fn a_repeated_report_is_answered_as_the_first_time() {
    let mut local = Local::new("ta001", 1, 1);
    let report = SlaveReport {
        want: true,
        ..SlaveReport::new(Guid(9), 1)
    };
    let first = local.master(MasterRequest::Report(report.clone()));
    let again = local.master(MasterRequest::Report(report));
    assert_eq!(first, again);
    let MasterReply::Report(answer) = first else {
        panic!("{first:?}")
    };
    assert!(answer.work.is_some());
    assert_eq!(local.status().held, 1);
}

#[test]
fn a_bad_report_changes_nothing() {
    let mut local = Local::new("ta001", 1, 1);
    let before = local.status();
    let other = colony_guest::codec::encode(&FlowShop::for_instance(
        flowshop::instance("ta002").unwrap(),
    ));
    for report in [
        SlaveReport {
            split_off: vec![other],
            ..SlaveReport::new(Guid(9), 1)
        },
        SlaveReport {
            split_off: vec![vec![1, 2, 3]],
            ..SlaveReport::new(Guid(9), 1)
        },
        SlaveReport {
            best: Some(Schedule {
                makespan: 1,
                permutation: (0..20).collect(),
            }),
            ..SlaveReport::new(Guid(9), 1)
        },
    ] {
        let mut ctx = ObjectContext::new(&local.master_uri, &mut local.master_seq);
        let refused = local.master.handle(&mut ctx, MasterRequest::Report(report));
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(local.status(), before);
    }
}

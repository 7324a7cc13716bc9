//! The cases with threads racing on one key: conditional writes have
//! exactly one winner, and increments under CAS add up.

use super::*;

pub fn cas_race_has_exactly_one_winner(s: &dyn KvStore) {
    const THREADS: usize = 16;
    const ROUNDS: usize = 20;
    let mut version = put(s, "race", b"start");
    for round in 0..ROUNDS {
        let barrier = Barrier::new(THREADS);
        let results: Vec<Result<u64, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let value = format!("round {round} thread {t}");
                        barrier.wait();
                        s.put("race", value.as_bytes(), Condition::Version(version))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<(usize, u64)> = results
            .iter()
            .enumerate()
            .filter_map(|(t, r)| r.as_ref().ok().map(|v| (t, *v)))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in &results {
            assert!(
                matches!(r, Ok(_) | Err(StoreError::Conflict)),
                "round {round}: {r:?}"
            );
        }
        let (t, v) = winners[0];
        let e = s.get("race").unwrap().unwrap();
        assert_eq!(e.version, v);
        assert_eq!(e.value, format!("round {round} thread {t}").into_bytes());
        version = v;
    }
}

pub fn absent_race_has_exactly_one_winner(s: &dyn KvStore) {
    const THREADS: usize = 16;
    for round in 0..10 {
        let key = format!("create/{round}");
        let barrier = Barrier::new(THREADS);
        let results: Vec<Result<u64, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (barrier, key) = (&barrier, &key);
                    scope.spawn(move || {
                        barrier.wait();
                        s.put(key, format!("{t}").as_bytes(), Condition::Absent)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| **r == Err(StoreError::Conflict))
            .count();
        assert_eq!((ok, conflicts), (1, THREADS - 1), "{results:?}");
    }
}

pub fn cas_increments_from_8_threads_add_up(s: &dyn KvStore) {
    const THREADS: usize = 8;
    const INCREMENTS: u64 = 50;
    let barrier = Barrier::new(THREADS);
    let conflicts = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (barrier, conflicts) = (&barrier, &conflicts);
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..INCREMENTS {
                    loop {
                        let (n, cond) = match s.get("counter").unwrap() {
                            Some(e) => {
                                let n: u64 = String::from_utf8(e.value).unwrap().parse().unwrap();
                                (n, Condition::Version(e.version))
                            }
                            None => (0, Condition::Absent),
                        };
                        match s.put("counter", (n + 1).to_string().as_bytes(), cond) {
                            Ok(_) => break,
                            Err(StoreError::Conflict) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("increment: {e}"),
                        }
                    }
                }
            });
        }
    });
    let total = String::from_utf8(s.get("counter").unwrap().unwrap().value).unwrap();
    assert_eq!(total, (THREADS as u64 * INCREMENTS).to_string());
    eprintln!(
        "counter: {total} after {} conflicts",
        conflicts.load(Ordering::Relaxed)
    );
}

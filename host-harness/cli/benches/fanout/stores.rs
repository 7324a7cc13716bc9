//! The store-size rows of the fan-out bench: concurrent events on 1 and 2
//! threads over 10,000 stored subscriptions (memory and embedded store),
//! and the per-event cost as the store grows to 100,000 other
//! subscriptions.

use super::*;

/// Events for different users on 1 and 2 threads; prints events/s, the
/// ratio (goal >= 1.7x on 2 cores) and RSS.
pub fn scaling(k: &StoredKeys, cores: usize) {
    // Scaling: concurrent events for different users (10 subscriptions
    // each, 10,000 in the store) on 1 and 2 threads, memory and embedded
    // store; rounds alternate 1 and 2 threads, medians.
    let memory = Arc::new(MemoryStore::new());
    populate(&memory, 10_000, 1_000, "u", "http://127.0.0.1:9/s", Some(k));
    println!(
        "host RSS with 10,000 subscriptions stored, idle: {:.0} MiB",
        rss_mib()
    );
    let dir = std::env::temp_dir().join(format!("jwp-bench-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let embedded = Arc::new(
        jmap_web_push_host::store::embedded::EmbeddedStore::open(dir.join("store.redb"))
            .expect("embedded store"),
    );
    populate_into(
        &*embedded,
        10_000,
        1_000,
        "u",
        "http://127.0.0.1:9/s",
        Some(k),
    );
    let stores: [(&str, Arc<dyn KvStore>); 2] = [("memory", memory), ("embedded", embedded)];
    for (name, store) in stores {
        let p = Arc::new(plugin(store, Some(Arc::new(Instant201))));
        let per_thread = 400;
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..4 {
            for threads in [1usize, 2] {
                let t = Instant::now();
                std::thread::scope(|s| {
                    for th in 0..threads {
                        let p = p.clone();
                        s.spawn(move || {
                            for i in 0..per_thread {
                                let user = format!("u{}", (th * per_thread + i) % 1000);
                                let state = round * 10 * per_thread + threads * per_thread + i;
                                let r = p.state_changed(&event(&user, state)).unwrap().unwrap();
                                assert_eq!(r.delivered, 10);
                            }
                        });
                    }
                });
                if round > 0 {
                    // Round 0 warms every instance up.
                    rates[threads - 1]
                        .push((threads * per_thread) as f64 / t.elapsed().as_secs_f64());
                }
            }
        }
        let (one, two) = (median(rates[0].clone()), median(rates[1].clone()));
        println!(
            "scaling, {name} store, 10,000 subscriptions (10 per user), events for different users: \
             1 thread {one:.0} events/s ({:.0} pushes/s), 2 threads {two:.0} events/s ({:.0} pushes/s): \
             {:.2}x on {cores} cores (goal >= 1.7x on 2); RSS {:.0} MiB",
            one * 10.0,
            two * 10.0,
            two / one,
            rss_mib()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One subscription's per-event cost with 1 to 100,000 others stored.
pub fn per_event_cost_as_the_store_grows(k: &StoredKeys) {
    // Per-event cost as the store grows (one subscription for the user).
    // All four stores are built first and measured in turns, 20 events at a
    // time, so that a noisy period of the shared VM hits every size alike.
    println!("per-event cost, one subscription, other subscriptions in the store:");
    let sizes = [1usize, 1_000, 10_000, 100_000];
    let plugins: Vec<PushPlugin> = sizes
        .iter()
        .map(|&others| {
            let store = Arc::new(MemoryStore::new());
            populate(
                &store,
                others,
                (others / 10).max(1),
                "other",
                "http://127.0.0.1:9/o",
                Some(k),
            );
            populate(&store, 1, 1, "me", "http://127.0.0.1:9/me", Some(k));
            let p = plugin(store, Some(Arc::new(Instant201)));
            for i in 0..20 {
                p.state_changed(&event("me0", i)).unwrap().unwrap();
            }
            p
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for turn in 0..15 {
        for (p, t) in plugins.iter().zip(times.iter_mut()) {
            for i in 0..20 {
                let start = Instant::now();
                p.state_changed(&event("me0", 100 + turn * 20 + i))
                    .unwrap()
                    .unwrap();
                t.push(start.elapsed().as_secs_f64());
            }
        }
    }
    let base = median(times[0].clone());
    for (others, t) in sizes.iter().zip(times) {
        let m = median(t);
        println!(
            "  {others:>7}: {:.1} µs per event ({:.2}x)",
            m * 1e6,
            m / base
        );
    }
}

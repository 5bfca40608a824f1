//! Unit tests of the collective seam; the equivalence with one process is in
//! `tests/distributed.rs`.

use super::*;

#[test]
fn thread_group_sums_in_rank_order_and_broadcasts() {
    let results: Vec<(Vec<f64>, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::<f64>::new(3)
            .into_iter()
            .map(|comm| {
                s.spawn(move || {
                    let r = comm.rank() as f64;
                    let mut sum = vec![r, 10.0 * r, 0.1];
                    comm.allreduce_sum(&mut sum).unwrap();
                    let mut root = vec![r; 2];
                    comm.broadcast(&mut root, 2).unwrap();
                    assert_eq!(comm.size(), 3);
                    (sum, root)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (sum, root) in &results {
        // ((0.1 + 0.1) + 0.1), the same bits on every rank.
        assert_eq!(sum, &vec![3.0, 30.0, 0.1 + 0.1 + 0.1]);
        assert_eq!(root, &vec![2.0, 2.0]);
    }
}

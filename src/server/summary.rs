//! The SIGUSR1 summary: one line for the daemon, then one or two per live
//! log (its bits, and its log device's I/O).

use super::{Server, Uuid};

impl Server {
    /// Logs one line per live log: the SIGUSR1 summary.
    pub fn log_summary(&self) {
        let c = self.counters;
        log::info!(
            "{} live log(s), {} bytes of bitmaps; {} requests, {} error replies, {} dropped, {} malformed; \
             log device I/O {}",
            self.registry.len(),
            self.registry.used_bytes(),
            c.requests,
            c.error_replies,
            c.dropped,
            c.acked_malformed,
            if self.engine.is_async() {
                "asynchronous"
            } else {
                "synchronous"
            }
        );
        for e in self.registry.iter() {
            let log = &e.log;
            let mut status = heapless::String::<128>::new();
            let _ = log.status_info(&mut status);
            log::info!(
                "log {} luid {}: {}, {} regions of {} sectors, {} in sync, {} dirty, status \"{}\"",
                Uuid(&e.uuid),
                e.luid,
                log.log_type().name(),
                log.region_count(),
                log.region_size(),
                log.sync_count(),
                log.dirty_count(),
                status
            );
            if let Some(disk) = log.disk() {
                let io = disk.io_counts();
                let (in_flight, oldest) = e
                    .slot
                    .and_then(|slot| self.engine.in_flight(slot))
                    .map_or((0, 0.0), |(_, count, started)| {
                        (count, started.elapsed().as_secs_f64())
                    });
                log::info!(
                    "log {} luid {}: log device {}:{}: {} writes, {} cache flushes or FUA batches, {} leg \
                     flushes, {in_flight} I/O in flight (oldest {oldest:.1} s), {} requests \
                     waiting, {} stalls{}",
                    Uuid(&e.uuid),
                    e.luid,
                    disk.device().major(),
                    disk.device().minor(),
                    io.writes,
                    io.flushes,
                    io.leg_flushes,
                    e.parked.len(),
                    e.stalls,
                    if disk.flush_failed() {
                        " (legs could not be flushed: nothing is recorded clean)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
}

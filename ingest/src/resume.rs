//! Where a partition resumes from a checkpoint, given what the broker still holds of it.
//!
//! A checkpoint records, per partition, the offset of the next record to read. At
//! restart the partition's retained range `[log start, end)` is compared with it:
//! - inside the range (the usual case): reading resumes there, and the records from it
//!   to the end are read again or for the first time (`replay`);
//! - before the log start: retention deleted records the node never processed. They
//!   cannot be had; reading resumes at the log start and the gap is reported (`lost`),
//!   not hidden;
//! - past the end: the partition holds fewer records than the checkpoint has already
//!   counted, so the topic was deleted and created again (or its log was truncated).
//!   Resuming anywhere would count records twice or against state from another log:
//!   the node refuses to start, naming the partition.
//!
//! (The consumer's `auto.offset.reset` would instead jump silently to the log start.)
//!
//! A partition the checkpoint does not hold yet (the node had read nothing of it when
//! the checkpoint was taken) starts where the stream config says, resolved to a
//! concrete offset at start ([`fresh`]), so that the next checkpoint records it: a
//! partition that starts at its end and receives records while the node is down is
//! not skipped past them at the following restart.

use std::fmt;

/// How a partition resumes from its checkpointed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The offset reading starts at.
    pub offset: i64,
    /// Records between `offset` and the partition's end at restart: at most this many
    /// are read again (the rest arrived while the node was down).
    pub replay: i64,
    /// Records between the checkpointed offset and the log start that retention
    /// deleted before the node read them.
    pub lost: i64,
}

/// A checkpointed offset past the partition's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeError {
    pub topic: String,
    pub partition: i32,
    pub checkpointed: i64,
    pub end: i64,
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic `{}` partition {} ends at offset {}, but the checkpoint resumes it at \
             offset {}: the topic was deleted and created again, or its log truncated, \
             since the checkpoint was taken, and its state does not belong to this log. \
             Start the node from no checkpoint (remove its directory under \
             `checkpoint.url`, or give it another `node_id`) to read the topic afresh",
            self.topic, self.partition, self.end, self.checkpointed
        )
    }
}

impl std::error::Error for ResumeError {}

/// Where partition `partition` of `topic` resumes from `checkpointed`, given its log
/// start and end offsets now.
pub fn resume(
    topic: &str,
    partition: i32,
    checkpointed: i64,
    log_start: i64,
    end: i64,
) -> Result<Resume, ResumeError> {
    if checkpointed > end {
        return Err(ResumeError {
            topic: topic.to_string(),
            partition,
            checkpointed,
            end,
        });
    }
    let offset = checkpointed.max(log_start);
    Ok(Resume {
        offset,
        replay: end - offset,
        lost: offset - checkpointed,
    })
}

/// Where a partition the checkpoint does not hold starts: its log start (`from_end`
/// false) or its end, given those offsets now. Every record from there to the end is
/// read, for the first time or again (`replay`).
pub fn fresh(from_end: bool, log_start: i64, end: i64) -> Resume {
    let offset = if from_end { end } else { log_start };
    Resume {
        offset,
        replay: end - offset,
        lost: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_cases() {
        assert_eq!(
            resume("t", 0, 40, 10, 100),
            Ok(Resume {
                offset: 40,
                replay: 60,
                lost: 0
            })
        );
        assert_eq!(
            resume("t", 0, 4, 10, 100),
            Ok(Resume {
                offset: 10,
                replay: 90,
                lost: 6
            })
        );
        let e = resume("t", 3, 500, 0, 20).expect_err("past the end");
        let text = e.to_string();
        assert!(
            text.contains("`t` partition 3 ends at offset 20")
                && text.contains("resumes it at offset 500"),
            "{text}"
        );
        // Exactly at the end: caught up, nothing to read again.
        assert_eq!(
            resume("t", 0, 100, 10, 100),
            Ok(Resume {
                offset: 100,
                replay: 0,
                lost: 0
            })
        );
    }

    #[test]
    fn a_partition_the_checkpoint_does_not_hold_starts_at_a_concrete_offset() {
        assert_eq!(
            fresh(false, 10, 100),
            Resume {
                offset: 10,
                replay: 90,
                lost: 0
            }
        );
        assert_eq!(
            fresh(true, 10, 100),
            Resume {
                offset: 100,
                replay: 0,
                lost: 0
            }
        );
    }

    proptest! {
        /// Against the retained range as a set of offsets: the node reads every
        /// retained record from the checkpoint on and nothing else, and what it cannot
        /// read is exactly what retention took.
        #[test]
        fn reads_exactly_the_retained_records_from_the_checkpoint_on(
            log_start in 0i64..200,
            len in 0i64..200,
            checkpointed in 0i64..500,
        ) {
            let end = log_start + len;
            match resume("t", 0, checkpointed, log_start, end) {
                Err(e) => prop_assert!(checkpointed > end && e.end == end),
                Ok(r) => {
                    prop_assert!(checkpointed <= end);
                    let wanted: Vec<i64> = (checkpointed..end).collect();
                    let retained = |o: &i64| (log_start..end).contains(o);
                    let read: Vec<i64> = (r.offset..end).collect();
                    let kept: Vec<i64> = wanted.iter().copied().filter(retained).collect();
                    prop_assert_eq!(&read, &kept);
                    prop_assert_eq!(r.replay, read.len() as i64);
                    prop_assert_eq!(r.lost, (wanted.len() - kept.len()) as i64);
                }
            }
        }
    }
}

//! The MPI transport (the `mpi` feature): Open MPI, MPICH or Intel MPI through the `mpi` crate
//! (rsmpi). Buffers are staged on the host, so it serves every backend (flex, wgpu, cuda).

use std::sync::Mutex;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Transport;

/// Elements per MPI call: MPI counts are `int`, so large gradient buffers go in chunks.
const CHUNK: usize = 1 << 28;

/// MPI's world communicator, initialised with `MPI_THREAD_SERIALIZED`.
pub(crate) struct MpiTransport {
    /// `None` once finalised.
    universe: Mutex<Option<Universe>>,
    world: SimpleCommunicator,
}

// SAFETY: MPI was initialised with (at least) `MPI_THREAD_SERIALIZED`, which allows calls from
// any thread as long as no two run at once; every call below holds the `universe` lock, and the
// communicator is never used after `finish` (every call checks that the universe is still there).
unsafe impl Send for MpiTransport {}
// SAFETY: as above; shared references only reach MPI through the lock.
unsafe impl Sync for MpiTransport {}

impl MpiTransport {
    /// Initialises MPI. Returns the transport, this process's rank, the world size, the rank on
    /// this machine and the number of ranks on this machine.
    ///
    /// # Errors
    /// A message when MPI was already initialised or cannot give `MPI_THREAD_SERIALIZED`.
    pub(crate) fn init() -> Result<(Self, usize, usize, usize, usize), String> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| "MPI was already initialised in this process".to_string())?;
        if threading < mpi::Threading::Serialized {
            return Err(format!(
                "this MPI library gives thread level {threading:?}; titok-train needs MPI_THREAD_SERIALIZED"
            ));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let node = world.split_shared(world.rank());
        let (local_rank, local_size) = (node.rank() as usize, node.size() as usize);
        Ok((Self { universe: Mutex::new(Some(universe)), world }, rank, size, local_rank, local_size))
    }

    /// Runs `f` on the world communicator with the lock held.
    fn with_world<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let universe = self.universe.lock().unwrap_or_else(|e| e.into_inner());
        assert!(universe.is_some(), "MPI used after MPI_Finalize");
        f(&self.world)
    }
}

impl Transport for MpiTransport {
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        self.with_world(|world| {
            for chunk in buf.chunks_mut(CHUNK) {
                let send = chunk.to_vec();
                world.all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
        });
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
        self.with_world(|world| {
            let send = buf.to_vec();
            world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        });
    }

    fn all_reduce_max_i64(&self, buf: &mut [i64]) {
        self.with_world(|world| {
            let send = buf.to_vec();
            world.all_reduce_into(&send[..], buf, SystemOperation::max());
        });
    }

    fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        self.with_world(|world| {
            let mut all = vec![0u64; world.size() as usize];
            world.all_gather_into(&value, &mut all[..]);
            all
        })
    }

    fn broadcast_bytes(&self, buf: &mut [u8]) {
        self.with_world(|world| world.process_at_rank(0).broadcast_into(buf));
    }

    fn abort(&self, code: i32) -> ! {
        self.with_world(|world| world.abort(code))
    }

    fn finish(&self) {
        // Dropping the universe calls MPI_Finalize.
        let universe = self.universe.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(universe);
    }
}

"""The order of training batches: an in-memory dataset drawn in a per-epoch random order, as a
function of (seed, epoch) alone, so a resumed run (and each rank of a torchrun job) draws
exactly the batches it would have."""

import torch

from imagegen.common.errors import UsageError


class EpochBatches:
    """Batches drawn from an in-memory dataset in a per-epoch random order.

    The order depends only on (seed, epoch), so any step's batch can be recomputed: resume
    needs no loader state. In a job of `world_size` processes each step consumes one global
    batch of batch_size * world_size images, and rank r takes the r-th slice of it: the ranks
    see disjoint shards of every epoch. The last incomplete global batch of an epoch is dropped.
    """

    def __init__(
        self, images: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        n, global_batch = images.shape[0], batch_size * world_size
        if n < global_batch:
            what = f"the batch size {batch_size}"
            if world_size > 1:
                what = f"the global batch {batch_size} x {world_size} processes"
            raise UsageError(f"the dataset has {n} images, fewer than {what}")
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.batches_per_epoch = n // global_batch
        self._epoch = -1
        self._order: torch.Tensor | None = None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of image indices for `epoch` (the same on every rank)."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.images.shape[0], generator=g).to(self.images.device)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def indices(self, step: int) -> torch.Tensor:
        """This rank's image indices (B,) at optimisation step `step` (0-based)."""
        epoch, i = divmod(step, self.batches_per_epoch)
        start = (i * self.world_size + self.rank) * self.batch_size
        return self.order(epoch)[start : start + self.batch_size]

    def batch(self, step: int) -> torch.Tensor:
        """This rank's uint8 batch (B, C, H, W) at optimisation step `step` (0-based)."""
        return self.images.index_select(0, self.indices(step))

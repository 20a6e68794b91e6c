"""Image captioning: a CNN encoder feeding a one-to-many recurrent decoder.

Show and Tell (Vinyals et al. 2015) feeds the image embedding as the decoder's first input; Karpathy &
Fei-Fei 2015 use it to set the initial hidden state instead (``image_as="state"``); ``image_as="grid"``
feeds the cells of the pooled feature grid one by one, left to right, as the first inputs (so the order of
what the caption names left to right is the order the decoder reads); ``image_as="attention"`` is Show,
Attend and Tell (Xu et al. 2015): the mean feature sets the initial state and at every step the decoder
reads a soft-attention average of the grid's feature vectors, weighted by how well each matches its
hidden state. The encoder is any
zoo classifier cut after its last stage (``create_model(..., features_only=True)``), average-pooled to a
``pool_size x pool_size`` grid (1: global pooling; a small grid keeps where things are), projected and
batch-normalised; frozen or fine-tuned, optionally from pretrained weights. The decoder cell is a
vanilla RNN (Elman 1990), an LSTM (Hochreiter & Schmidhuber 1997) or a GRU (Cho et al. 2014).

Training is teacher-forced (:meth:`Captioner.forward`). Inference: :meth:`~Captioner.greedy`,
:meth:`~Captioner.sample` (softmax with a temperature) and :meth:`~Captioner.beam_search` (with the
length penalty of Wu et al. 2016). Every decoder returns ``(B, max_len)`` token indices: the words, the
end token, then padding; decoding stops at the end token or after ``max_len`` tokens.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Union

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models import create_model, register_model

_PAPER = "Vinyals et al. 2015 (Show and Tell); Karpathy & Fei-Fei 2015; Xu et al. 2015 (Show, Attend and Tell)"
CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
IMAGE_AS = ("input", "state", "grid", "attention")
RNNState = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


class AttentionState(NamedTuple):
    """An attending decoder's state: the recurrent state and, per image, what it attends over."""

    rnn: RNNState
    memory: torch.Tensor  # (B, P, D) feature vectors of the P grid cells
    keys: torch.Tensor  # (B, P, A) their projections into the attention space, computed once per image


State = Union[RNNState, AttentionState]


def _select(state: State, index: torch.Tensor) -> State:
    """The rows ``index`` of a decoder state (``(layers, B, H)``, an LSTM's ``(h, c)`` pair, or an
    :class:`AttentionState`)."""
    if isinstance(state, AttentionState):
        return AttentionState(_select(state.rnn, index), state.memory.index_select(0, index), state.keys.index_select(0, index))
    if isinstance(state, tuple):
        return (state[0].index_select(1, index), state[1].index_select(1, index))
    return state.index_select(1, index)


class SoftAttention(nn.Module):
    """Deterministic soft attention (Xu et al. 2015, sec. 4.2): the score of cell ``i`` is
    ``w . tanh(W a_i + U h)`` (Bahdanau et al. 2015); the context is the softmax-weighted mean of the
    cells' features ``a_i``, scaled by the gate ``sigmoid(f_beta(h))`` (sec. 4.2.1)."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.key = nn.Linear(feature_dim, attention_dim)
        self.query = nn.Linear(hidden_dim, attention_dim, bias=False)
        self.score = nn.Linear(attention_dim, 1, bias=False)
        self.gate = nn.Linear(hidden_dim, feature_dim)

    def forward(self, hidden: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``(B, D)`` and attention weights ``(B, P)`` for hidden states ``(B, H)``."""
        weights = torch.softmax(self.score(torch.tanh(keys + self.query(hidden)[:, None]))[..., 0], dim=1)
        context = torch.bmm(weights[:, None], memory)[:, 0]
        return torch.sigmoid(self.gate(hidden)) * context, weights


def _cells(maps: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` feature maps as ``(B, w * h, C)`` cells: columns left to right, each top to bottom."""
    return maps.permute(0, 3, 2, 1).flatten(1, 2)


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """``((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, eq. 14); ``alpha = 0`` ranks by total log-probability."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


class Captioner(nn.Module):
    """CNN encoder + RNN decoder over a vocabulary whose indices ``pad_id``, ``bos_id``, ``eos_id`` are special."""

    def __init__(
        self,
        vocab_size: int,
        encoder: str = "resnet20",
        cell: Literal["rnn", "lstm", "gru"] = "lstm",
        in_chans: int = 3,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 1,
        drop_rate: float = 0.0,
        image_as: Literal["input", "state", "grid", "attention"] = "input",
        pool_size: int | None = 1,
        attention_dim: int | None = None,
        encoder_pretrained: str | None = None,
        freeze_encoder: bool = False,
        encoder_kwargs: dict[str, Any] | None = None,
        max_len: int = 20,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"unknown model.cell {cell!r}; use one of {sorted(CELLS)}")
        if image_as not in IMAGE_AS:
            raise ConfigError(f"model.image_as must be one of {', '.join(IMAGE_AS)}, got {image_as!r}")
        if pool_size is None and image_as != "attention":
            raise ConfigError(f"model.pool_size=null (attend over the full feature map) needs model.image_as=attention, "
                              f"got image_as={image_as!r}; set pool_size to a grid side such as 1 or 2")
        if vocab_size <= max(pad_id, bos_id, eos_id) or (pool_size is not None and pool_size < 1) or max_len < 1:
            raise ConfigError(f"captioner needs vocab_size > its special indices, pool_size >= 1 (or null) and max_len >= 1; got "
                              f"vocab_size={vocab_size}, pool_size={pool_size}, max_len={max_len}")
        self.vocab_size, self.cell, self.image_as, self.max_len = vocab_size, cell, image_as, max_len
        self.num_layers, self.hidden_dim = num_layers, hidden_dim
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.freeze_encoder = freeze_encoder

        self.encoder = create_model(encoder, in_chans=in_chans, pretrained=encoder_pretrained, features_only=True,
                                    out_indices=[-1], **(encoder_kwargs or {}))
        self.pool = nn.Identity() if pool_size is None else nn.AdaptiveAvgPool2d(pool_size)
        channels = self.encoder.channels[-1]
        feature_dim = channels * (pool_size or 1) ** 2
        states = num_layers * (2 if cell == "lstm" else 1)  # an LSTM starts from h and c
        if image_as in ("grid", "attention"):
            feature_dim = channels  # one code per grid cell with shared weights, or the mean cell (attention)
        code_dim = states * hidden_dim if image_as in ("state", "attention") else embed_dim
        # batch-normalised code: raw pooled ReLU features share a large positive offset that saturates the gates
        self.project = nn.Sequential(nn.Linear(feature_dim, code_dim, bias=False), nn.BatchNorm1d(code_dim))
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        context_dim = channels if image_as == "attention" else 0  # the attended context joins each input and output
        self.attention = SoftAttention(channels, hidden_dim, attention_dim or hidden_dim) if context_dim else None
        self.rnn = CELLS[cell](embed_dim + context_dim, hidden_dim, num_layers, batch_first=True,
                               dropout=drop_rate if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(hidden_dim + context_dim, vocab_size)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its batch-norm statistics
        return self

    # ---- encoder ---------------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, P, D)`` image codes: the decoder's first ``P`` inputs (``input``: P = 1; ``grid``: one per
        cell, columns left to right, each top to bottom) or, for ``state``, its initial state (P = 1)."""
        maps = self._maps(images)
        cells = _cells(maps) if self.image_as == "grid" else maps.flatten(1)[:, None]
        return self._project(cells)

    def _maps(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` pooled feature maps of the encoder's last stage."""
        return self.pool(self.encoder(images)[-1])

    def _project(self, cells: torch.Tensor) -> torch.Tensor:
        return self.project(self.dropout(cells.flatten(0, 1))).view(len(cells), cells.shape[1], -1)

    def init_state(self, images: torch.Tensor) -> State:
        """The decoder state once it has seen the image, ready for ``<bos>``. Attention: the state set by
        the mean cell, and the grid's cells to attend over."""
        if self.attention is not None:
            return self._attention_state(self._maps(images))
        code = self.encode(images)
        if self.image_as == "state":
            return self._state_from(code[:, 0])
        return self.rnn(code)[1]

    def _attention_state(self, maps: torch.Tensor) -> AttentionState:
        assert self.attention is not None
        memory = _cells(maps)
        rnn = self._state_from(self._project(memory.mean(1, keepdim=True))[:, 0])
        return AttentionState(rnn, memory, self.attention.key(memory))

    def _state_from(self, code: torch.Tensor) -> RNNState:
        """Initial hidden (and LSTM cell) states of every layer from the image code (``state``, ``attention``)."""
        h = torch.tanh(code).view(len(code), -1, self.num_layers, self.hidden_dim).permute(1, 2, 0, 3).contiguous()
        return (h[0], h[1]) if self.cell == "lstm" else h[0]

    # ---- decoder ---------------------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``tokens`` ``(B, T)`` start with ``<bos>``; returns ``(B, T - 1, V)`` logits of
        ``tokens[:, 1:]``, each predicted from the image and the true words before it."""
        inputs = self.embed(tokens[:, :-1])
        if self.image_as in ("input", "grid"):
            code = self.encode(images)
            out = self.rnn(torch.cat([code, inputs], dim=1))[0][:, code.shape[1] :]
        else:
            out = self.advance(inputs, self.init_state(images))[0]
        return self.head(self.dropout(out))

    def advance(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run the decoder over embedded inputs ``(B, T, E)`` from ``state``: the outputs ``(B, T, F)`` the
        head reads and the final state."""
        if isinstance(state, AttentionState):
            return self._attend(inputs, state)[:2]
        return self.rnn(inputs, state)

    def _attend(self, inputs: torch.Tensor, state: AttentionState) -> tuple[torch.Tensor, AttentionState, torch.Tensor]:
        """:meth:`advance` with attention, one step at a time: each input joined by the context the previous
        hidden state attends to, each output by the same context. Also returns the weights ``(B, T, P)``."""
        assert self.attention is not None
        outputs, weights = [], []
        for t in range(inputs.shape[1]):
            hidden = (state.rnn[0] if isinstance(state.rnn, tuple) else state.rnn)[-1]  # top layer
            context, weight = self.attention(hidden, state.memory, state.keys)
            out, rnn_state = self.rnn(torch.cat([inputs[:, t], context], dim=-1)[:, None], state.rnn)
            outputs.append(torch.cat([out[:, 0], context], dim=-1))
            weights.append(weight)
            state = state._replace(rnn=rnn_state)
        return torch.stack(outputs, dim=1), state, torch.stack(weights, dim=1)

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, T - 1, h, w)`` over the feature grid while predicting ``tokens[:, 1:]``
        (teacher-forced); needs ``image_as="attention"``."""
        if self.attention is None:
            raise ConfigError(f"attention maps need model.image_as=attention, got {self.image_as!r}")
        maps = self._maps(images)
        weights = self._attend(self.embed(tokens[:, :-1]), self._attention_state(maps))[2]
        h, w = maps.shape[-2:]
        return weights.view(len(images), -1, w, h).transpose(-1, -2)  # cells are column-major

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One decoding step: logits ``(B, V)`` of the next word after ``tokens`` ``(B,)``, and the new state.
        ``<pad>`` and ``<bos>`` are never generated."""
        out, state = self.advance(self.embed(tokens)[:, None], state)
        logits = self.head(out[:, 0]).float()
        logits[:, [self.pad_id, self.bos_id]] = float("-inf")
        return logits, state

    def _generate(self, images: torch.Tensor, max_len: int | None, choose: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        max_len = max_len or self.max_len
        state = self.init_state(images)
        token = torch.full((len(images),), self.bos_id, dtype=torch.long, device=images.device)
        out = torch.full((len(images), max_len), self.pad_id, dtype=torch.long, device=images.device)
        done = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        for t in range(max_len):
            logits, state = self.step(token, state)
            token = choose(logits).masked_fill(done, self.pad_id)
            out[:, t] = token
            done |= token == self.eos_id
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def greedy(self, images: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """The most likely word at every step."""
        return self._generate(images, max_len, lambda logits: logits.argmax(-1))

    @torch.no_grad()
    def sample(self, images: torch.Tensor, max_len: int | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Words drawn from ``softmax(logits / temperature)`` (lower: closer to greedy)."""
        if temperature <= 0:
            raise ConfigError(f"sampling temperature must be > 0, got {temperature}; use greedy decoding for 0")

        def draw(logits: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(logits / temperature, dim=-1)
            return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(logits.device)

        return self._generate(images, max_len, draw)

    @torch.no_grad()
    def beam_search(self, images: torch.Tensor, beam_size: int = 3, max_len: int | None = None,
                    alpha: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The best of ``beam_size`` hypotheses kept per image by total log-probability; finished ones
        (ended by ``<eos>``) stay in the beam at no further cost. The final choice divides each score
        by :func:`length_penalty` ``alpha``. Returns the sequences and their (penalised) scores."""
        if beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
        max_len = max_len or self.max_len
        b, k, v, device = len(images), min(beam_size, self.vocab_size - 2), self.vocab_size, images.device
        state = _select(self.init_state(images), torch.arange(b, device=device).repeat_interleave(k))
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start as the same empty hypothesis: expand only one
        seqs = torch.full((b, k, max_len), self.pad_id, dtype=torch.long, device=device)
        lengths = torch.zeros(b, k, dtype=torch.long, device=device)
        done = torch.zeros(b, k, dtype=torch.bool, device=device)
        finished = torch.full((v,), float("-inf"), device=device)
        finished[self.pad_id] = 0.0  # a finished hypothesis only appends padding, at no cost
        token = torch.full((b * k,), self.bos_id, dtype=torch.long, device=device)
        offsets = torch.arange(b, device=device)[:, None] * k
        for t in range(max_len):
            logits, state = self.step(token, state)
            logp = torch.log_softmax(logits, dim=-1).view(b, k, v)
            logp = torch.where(done[..., None], finished, logp)
            scores, flat = (scores[..., None] + logp).view(b, k * v).topk(k, dim=1)
            beam, token = flat // v, flat % v
            seqs = seqs.gather(1, beam[..., None].expand(-1, -1, max_len)).clone()
            seqs[:, :, t] = token
            alive = ~done.gather(1, beam)
            lengths = lengths.gather(1, beam) + alive.long()
            done = ~alive | (token == self.eos_id)
            state = _select(state, (beam + offsets).flatten())
            token = token.flatten()
            if bool(done.all()):
                break
        ranked = scores / length_penalty(lengths, alpha)
        best = ranked.argmax(dim=1)
        rows = torch.arange(b, device=device)
        return seqs[rows, best], ranked[rows, best]


def _captioner(vocab_size: int | None, **kwargs: Any) -> Captioner:
    if vocab_size is None:
        raise ConfigError("model.vocab_size is null and the data has no vocabulary; use a captioning dataset "
                          "(data=digit_scene_captions, coco_captions or karpathy) or set model.vocab_size")
    return Captioner(vocab_size, **kwargs)


@register_model(family="captioner", task="captioning", input_size=224, paper=_PAPER)
def captioner(vocab_size: int | None = 1000, **kwargs: Any) -> Captioner:
    """Any encoder (``encoder=<zoo model>``) and cell (``cell=rnn|lstm|gru``)."""
    return _captioner(vocab_size, **kwargs)


@register_model(family="captioner", task="captioning", input_size=64, paper=_PAPER)
def captioner_resnet20_lstm(vocab_size: int | None = 1000, **kwargs: Any) -> Captioner:
    """CIFAR ResNet-20 encoder, LSTM decoder: sized for small images (digit scenes)."""
    return _captioner(vocab_size, **{"encoder": "resnet20", "cell": "lstm", **kwargs})


@register_model(family="captioner", task="captioning", input_size=64, paper=_PAPER)
def captioner_resnet20_gru(vocab_size: int | None = 1000, **kwargs: Any) -> Captioner:
    """CIFAR ResNet-20 encoder, GRU decoder."""
    return _captioner(vocab_size, **{"encoder": "resnet20", "cell": "gru", **kwargs})


@register_model(family="captioner", task="captioning", input_size=64, paper=_PAPER)
def captioner_resnet20_rnn(vocab_size: int | None = 1000, **kwargs: Any) -> Captioner:
    """CIFAR ResNet-20 encoder, vanilla (tanh) RNN decoder."""
    return _captioner(vocab_size, **{"encoder": "resnet20", "cell": "rnn", **kwargs})


@register_model(family="captioner", task="captioning", input_size=224, paper=_PAPER)
def captioner_resnet18_lstm(vocab_size: int | None = 1000, **kwargs: Any) -> Captioner:
    """ImageNet ResNet-18 encoder (``encoder_pretrained="torchvision:resnet18.IMAGENET1K_V1"`` for the
    ImageNet weights), LSTM decoder: for photographs (COCO, Flickr)."""
    return _captioner(vocab_size, **{"encoder": "resnet18", "cell": "lstm", **kwargs})

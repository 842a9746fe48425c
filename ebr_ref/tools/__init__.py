"""Around the engine: video input and preprocessing (:mod:`.video`), pictures (:mod:`.viz`) and the
layer-by-layer comparison with another implementation (:mod:`.compare`)."""

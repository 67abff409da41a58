"""What goes over the wire: the Avro codecs of every topic (`codecs`, single-object
encoding or the Confluent format through a Schema Registry, `schema_registry`), and
the compiled readers and writers of Avro binary (`avro_read`, `avro_write`) the batch
paths are built from, among them the PredictionEvent batch decoder
(`prediction_decoder`), and a batch of ids packed as one bytes object (`packed_text`)."""

//! `table!`, which turns one table's definition into its `TableDef`, row struct and builder
//! (see the parent module's doc), and the helper macros mapping a column kind to its Rust, Arrow
//! and builder types.

macro_rules! rust_type {
    (Utf8, $lt:lifetime) => { &$lt str };
    (OptUtf8, $lt:lifetime) => { Option<&$lt str> };
    (OptInt32, $lt:lifetime) => { Option<i32> };
    (OptInt64, $lt:lifetime) => { Option<i64> };
    (OptBool, $lt:lifetime) => { Option<bool> };
    (Bool, $lt:lifetime) => { bool };
    (Int8, $lt:lifetime) => { i8 };
    (Int32, $lt:lifetime) => { i32 };
    (Int64, $lt:lifetime) => { i64 };
    (Float32, $lt:lifetime) => { f32 };
    (OptFloat32, $lt:lifetime) => { Option<f32> };
    (OptFloat64, $lt:lifetime) => { Option<f64> };
    (Float64, $lt:lifetime) => { f64 };
    (ListFloat32, $lt:lifetime) => { &$lt [f32] };
    (ListFloat, $lt:lifetime) => { &$lt [f32] };
}

macro_rules! builder_type {
    (Utf8) => { StringBuilder };
    (OptUtf8) => { StringBuilder };
    (OptInt32) => { Int32Builder };
    (OptInt64) => { Int64Builder };
    (OptBool) => { BooleanBuilder };
    (Bool) => { BooleanBuilder };
    (Int8) => { Int8Builder };
    (Int32) => { Int32Builder };
    (Int64) => { Int64Builder };
    (Float32) => { Float32Builder };
    (OptFloat32) => { Float32Builder };
    (OptFloat64) => { Float64Builder };
    (Float64) => { Float64Builder };
    (ListFloat32) => { ListBuilder<Float32Builder> };
    (ListFloat) => { FloatListBuilder };
}

macro_rules! builder_new {
    (ListFloat, $opts:expr) => {
        FloatListBuilder::new($opts.list_float)
    };
    ($other:ident, $opts:expr) => {
        <builder_type!($other)>::default()
    };
}

macro_rules! builder_finish {
    (ListFloat, $b:expr) => {
        $b.finish()
    };
    ($other:ident, $b:expr) => {
        Arc::new($b.finish()) as ArrayRef
    };
}

macro_rules! col_type {
    (OptFloat32) => {
        ColType::Float32
    };
    (OptFloat64) => {
        ColType::Float64
    };
    (OptUtf8) => {
        ColType::Utf8
    };
    (OptInt32) => {
        ColType::Int32
    };
    (OptInt64) => {
        ColType::Int64
    };
    (OptBool) => {
        ColType::Bool
    };
    ($t:ident) => {
        ColType::$t
    };
}

macro_rules! nullable {
    (OptFloat32) => {
        true
    };
    (OptFloat64) => {
        true
    };
    (OptUtf8) => {
        true
    };
    (OptInt32) => {
        true
    };
    (OptInt64) => {
        true
    };
    (OptBool) => {
        true
    };
    ($t:ident) => {
        false
    };
}

/// Defines a table: its `TableDef` static, its row struct and its builder (see the module doc).
/// Column kinds: Utf8, Bool, Int8, Int32, Int64, Float32, Float64, ListFloat32, ListFloat; and
/// the nullable OptUtf8, OptBool, OptInt32, OptInt64, OptFloat32, OptFloat64.
macro_rules! table {
    (
        $(#[doc = $tdoc:literal])+
        $name:literal => $DEF:ident, $Table:ident, $Row:ident<$lt:lifetime> { $($cols:tt)+ }
    ) => {
        table!(@impl [$(#[doc = $tdoc])+] [$($tdoc)+] $name, $DEF, $Table,
            [$Row<$lt>], [$Row<'r>], $lt, { $($cols)+ });
    };
    (
        $(#[doc = $tdoc:literal])+
        $name:literal => $DEF:ident, $Table:ident, $Row:ident { $($cols:tt)+ }
    ) => {
        table!(@impl [$(#[doc = $tdoc])+] [$($tdoc)+] $name, $DEF, $Table,
            [$Row], [$Row], 'static, { $($cols)+ });
    };
    (@impl [$($attr:tt)+] [$($tdoc:literal)+] $name:literal, $DEF:ident, $Table:ident,
        [$($rowdef:tt)+], [$($rowty:tt)+], $lt:lifetime, {
            $( $(#[doc = $cdoc:literal])+ $col:ident : $kind:ident, )+
        }
    ) => {
        #[doc = concat!("The `", $name, "` table.")]
        pub static $DEF: TableDef = TableDef {
            name: $name,
            doc: concat!($($tdoc, "\n"),+),
            columns: &[$(Column {
                name: stringify!($col),
                ty: col_type!($kind),
                nullable: nullable!($kind),
                doc: concat!($($cdoc, "\n"),+),
            }),+],
        };

        $($attr)+
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $($rowdef)+ {
            $( $(#[doc = $cdoc])+ pub $col: rust_type!($kind, $lt), )+
        }

        #[doc = concat!("Row builder of the `", $name, "` table.")]
        #[derive(Debug)]
        pub struct $Table {
            schema: SchemaRef,
            len: usize,
            bytes: usize,
            $( $col: builder_type!($kind), )+
        }

        impl Table for $Table {
            type Row<'r> = $($rowty)+;
            fn def() -> &'static TableDef {
                &$DEF
            }
            fn new(opts: &TableOptions) -> Self {
                $Table {
                    schema: $DEF.schema(opts),
                    len: 0,
                    bytes: 0,
                    $( $col: builder_new!($kind, opts), )+
                }
            }
            fn append(&mut self, row: Self::Row<'_>) {
                $( self.bytes += self.$col.push(row.$col); )+
                self.len += 1;
            }
            fn len(&self) -> usize {
                self.len
            }
            fn bytes(&self) -> usize {
                self.bytes
            }
            fn finish(&mut self) -> RecordBatch {
                self.len = 0;
                self.bytes = 0;
                let columns = vec![$( builder_finish!($kind, self.$col) ),+];
                RecordBatch::try_new(self.schema.clone(), columns)
                    .expect("columns built from the table definition match its schema")
            }
            fn schema(&self) -> SchemaRef {
                self.schema.clone()
            }
        }
    };
}

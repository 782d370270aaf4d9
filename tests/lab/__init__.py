"""The namespace lab: throwaway network namespaces with veth 'NICs' for tests and the demo."""

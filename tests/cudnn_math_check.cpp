// Built by tests/test_cudnn_math.py against the patched Caffe source of a cuDNN build and the cuDNN
// it was built with: the convolution descriptor that Caffe's cuDNN layers set up
// (caffe::cudnn::setConvolutionDesc, docker/patches/30-cudnn-fp32-workspace.patch) is asked back
// for its math type through cuDNN itself, and the workspace limit the layers use is printed.
// Descriptors are host objects: no GPU is needed.
#include <cstdio>

#include "caffe/util/cudnn.hpp"

static const char* name(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_DEFAULT_MATH: return "DEFAULT";
    case CUDNN_TENSOR_OP_MATH: return "TENSOR_OP";
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "TENSOR_OP_ALLOW_CONVERSION";
    case CUDNN_FMA_MATH: return "FMA";
  }
  return "?";
}

template <typename Dtype>
static void report(const char* type) {
  cudnnTensorDescriptor_t bottom;
  cudnnFilterDescriptor_t filter;
  cudnnConvolutionDescriptor_t conv;
  caffe::cudnn::createTensor4dDesc<Dtype>(&bottom);
  caffe::cudnn::createFilterDesc<Dtype>(&filter, 64, 32, 3, 3);
  caffe::cudnn::createConvolutionDesc<Dtype>(&conv);
  caffe::cudnn::setConvolutionDesc<Dtype>(&conv, bottom, filter, 1, 1, 1, 1);
  cudnnMathType_t math;
  CUDNN_CHECK(cudnnGetConvolutionMathType(conv, &math));
  std::printf("%s math=%s\n", type, name(math));
  CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(conv));
  CUDNN_CHECK(cudnnDestroyFilterDescriptor(filter));
  CUDNN_CHECK(cudnnDestroyTensorDescriptor(bottom));
}

int main() {
  std::printf("cudnn=%zu\n", cudnnGetVersion());
  report<float>("float");
  report<double>("double");
  std::printf("workspace_limit_bytes=%zu\n", caffe::cudnn::workspaceLimitBytes());
  return 0;
}
